/* model.c: the decoder (Qwen2 / Qwen3 dense / Llama) defined once: the weight table, the
 * activation arena, the forward (packed batches, prefill, decode), the backward for the GRPO
 * and SFT losses, and the train state (fp32 gradients, AdamW moments). Every computation is a
 * backend op; this file only moves host data in and out and does pointer arithmetic on device
 * addresses.
 *
 * Layer (transformers' order):
 *   h1 = rmsnorm(x, input_layernorm)
 *   q, k, v = h1 Wq^T (+bq), h1 Wk^T (+bk), h1 Wv^T (+bv)      (N, H|KV, D)
 *   [Qwen3] q, k = rmsnorm_per_head(q, q_norm), rmsnorm_per_head(k, k_norm)
 *   q, k = rope(q), rope(k); att = causal_gqa(q, k, v)
 *   x2 = x + att Wo^T (+bo)
 *   h2 = rmsnorm(x2, post_attention_layernorm)
 *   x' = x2 + (silu(h2 Wg^T) * h2 Wu^T) Wd^T
 * then hf = rmsnorm(x_L, model.norm), logits = hf lm_head^T (lm_head = embed_tokens if tied).
 *
 * Memory: weights, gradients and moments are each ONE device buffer with parameters at fixed
 * offsets (so NCCL reduces one tensor). Activations live in one arena sized for a token count
 * (all layers kept when training, one layer's worth reused otherwise) that only grows. Logits
 * are computed in chunks of rows: (tokens, V) never exists at once. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/rng.h"

enum { P_MATRIX = 0, P_EMBED, P_NORM, P_BIAS };

typedef struct {
    aha_param_info info;
    char name[96];
    int kind;
    int64_t off; /* elements into the weight / grad / moment buffers */
} param;

typedef struct {
    int ln1, q, qb, k, kb, v, vb, o, ob, qn, kn, ln2, gate, gateb, up, upb, down, downb;
} layer_params;

typedef struct {
    aha_tensor h1, rstd1, q, k, v, qpre, kpre, qrstd, krstd, att, lse, x2, h2, rstd2, g, u, a;
} layer_acts;

typedef struct {
    int cap;     /* tokens */
    bool train;  /* per-layer storage and backward buffers */
    int chunk;   /* logits rows per chunk */
    aha_buf *buf;
    aha_tensor *res; /* (L + 1) residual streams (all the same tensor unless train) */
    layer_acts *la;  /* (L) */
    aha_tensor hf, rstdf, logits, logits32, lp, lse, dlp;
    aha_tensor sel, hsel, dhsel; /* rows the loss head works on, gathered (head row selection) */
    aha_tensor qkv;              /* the fused q/k/v projection of the layer at hand (rope_qkv) */
    aha_tensor dres, dh, dq, dk, dv, datt, dkpre, dg, du, da;
    aha_tensor ids, pos, targets, cu, slots, lens;
    aha_tensor old, ref, adv, weight, mask, stats;
    /* host staging, cap (+1) entries */
    int32_t *h_pos, *h_targets, *h_cu, *h_slots, *h_lens, *h_sel;
    float *h_old, *h_ref, *h_adv, *h_weight, *h_mask, *h_lp;
    /* a decode step's ids, pos, (targets), cu, slots and lens laid out as in the device arena
     * (they are carved one after the other), so decode_sample uploads them in one copy */
    unsigned char *h_idx;
} acts;

struct aha_model {
    aha_model_config cfg;
    aha_backend *be;
    aha_model_opts opts;
    int n_params;
    param *params;
    layer_params *layers;
    int embed, norm, lm_head; /* lm_head == embed when tied */
    int64_t numel;
    aha_buf *wbuf, *mbuf;
    aha_tensor w;      /* compute weights, act_dtype */
    aha_tensor master; /* fp32 master (== w on an fp32 backend; none when not kept) */
    acts a;
    aha_train *train;
    float *host_tmp; /* largest parameter, for conversions */
    uint16_t *host_tmp16;
};

struct aha_train {
    aha_model *m;
    aha_buf *buf;
    aha_tensor g, m1, m2, acc;
    int step;
};

struct aha_kv_cache {
    aha_model *m;
    int slots, max_seq;
    int *len;
    aha_buf *buf;
    aha_tensor base;
    int64_t slab; /* elements of one layer's k (or v): slots * max_seq * KV * D */
};

#define BE(m) ((m)->be)
#define OPS(m) ((m)->be->ops)
#define TRY_OP(call)                                                                              \
    do {                                                                                          \
        aha_status st__ = (call);                                                                 \
        if (st__ != AHA_OK) return st__;                                                          \
    } while (0)

static aha_tensor W(const aha_model *m, int i)
{
    return aha_tensor_at(m->w, m->params[i].off);
}
static aha_tensor Wopt(const aha_model *m, int i)
{
    return i < 0 ? aha_tensor_none() : W(m, i);
}
static aha_tensor G(const aha_train *t, int i)
{
    return aha_tensor_at(t->g, t->m->params[i].off);
}
static aha_tensor Gopt(const aha_train *t, int i)
{
    return i < 0 ? aha_tensor_none() : G(t, i);
}

/* ---- the weight table ------------------------------------------------------------------ */

static int add_param(aha_model *m, int cap, int kind, int64_t d0, int64_t d1, const char *fmt, int l,
                     const char *leaf)
{
    AHA_ASSERT(m->n_params < cap);
    param *p = &m->params[m->n_params];
    if (l >= 0)
        snprintf(p->name, sizeof p->name, fmt, l, leaf);
    else
        snprintf(p->name, sizeof p->name, "%s", fmt);
    p->kind = kind;
    p->info.name = p->name;
    p->info.ndim = d1 > 0 ? 2 : 1;
    p->info.shape[0] = d0;
    p->info.shape[1] = d1 > 0 ? d1 : 0;
    p->info.numel = d0 * (d1 > 0 ? d1 : 1);
    /* keep every parameter 64-element aligned so bf16 and f32 views stay 128/256-byte aligned */
    p->off = m->numel;
    m->numel += (p->info.numel + 63) / 64 * 64;
    return m->n_params++;
}

static aha_status check_config(const aha_model_config *c, aha_err *err)
{
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 ||
        c->num_layers <= 0 || c->num_heads <= 0 || c->num_kv_heads <= 0 || c->head_dim <= 0)
        return aha_errf(err, AHA_EFORMAT, "config: sizes must be positive");
    if (c->num_heads % c->num_kv_heads)
        return aha_errf(err, AHA_EFORMAT, "config: num_attention_heads %d not a multiple of num_key_value_heads %d",
                        c->num_heads, c->num_kv_heads);
    if (c->head_dim % 2)
        return aha_errf(err, AHA_EFORMAT, "config: head_dim %d must be even for RoPE", c->head_dim);
    if (c->num_layers > 1024 || c->hidden_size > 65536 || c->intermediate_size > 262144 ||
        c->vocab_size > 4 * 1024 * 1024 || c->num_heads > 1024 || c->head_dim > 1024)
        return aha_errf(err, AHA_EFORMAT, "config: sizes beyond what this build supports");
    if (!(c->rms_norm_eps > 0) || !(c->rope_theta > 0))
        return aha_errf(err, AHA_EFORMAT, "config: rms_norm_eps and rope_theta must be > 0");
    return AHA_OK;
}

static aha_status build_table(aha_model *m, aha_err *err)
{
    const aha_model_config *c = &m->cfg;
    int L = c->num_layers, C = c->hidden_size, I = c->intermediate_size;
    int64_t HD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    int cap = 3 + L * 18;
    m->params = calloc((size_t)cap, sizeof *m->params);
    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->params || !m->layers) return aha_errf(err, AHA_ENOMEM, "model: weight table");
    const char *lf = "model.layers.%d.%s";
    m->embed = add_param(m, cap, P_EMBED, c->vocab_size, C, "model.embed_tokens.weight", -1, NULL);
    for (int l = 0; l < L; l++) {
        layer_params *lp = &m->layers[l];
        /* q, k, v weights back to back, then their biases: one (HD + 2 KD, C) matrix and one
         * bias vector for the fused projection (forward) */
        lp->q = add_param(m, cap, P_MATRIX, HD, C, lf, l, "self_attn.q_proj.weight");
        lp->k = add_param(m, cap, P_MATRIX, KD, C, lf, l, "self_attn.k_proj.weight");
        lp->v = add_param(m, cap, P_MATRIX, KD, C, lf, l, "self_attn.v_proj.weight");
        lp->qb = c->attention_bias ? add_param(m, cap, P_BIAS, HD, 0, lf, l, "self_attn.q_proj.bias") : -1;
        lp->kb = c->attention_bias ? add_param(m, cap, P_BIAS, KD, 0, lf, l, "self_attn.k_proj.bias") : -1;
        lp->vb = c->attention_bias ? add_param(m, cap, P_BIAS, KD, 0, lf, l, "self_attn.v_proj.bias") : -1;
        lp->o = add_param(m, cap, P_MATRIX, C, HD, lf, l, "self_attn.o_proj.weight");
        lp->ob = c->o_bias ? add_param(m, cap, P_BIAS, C, 0, lf, l, "self_attn.o_proj.bias") : -1;
        lp->qn = c->qk_norm ? add_param(m, cap, P_NORM, c->head_dim, 0, lf, l, "self_attn.q_norm.weight") : -1;
        lp->kn = c->qk_norm ? add_param(m, cap, P_NORM, c->head_dim, 0, lf, l, "self_attn.k_norm.weight") : -1;
        lp->gate = add_param(m, cap, P_MATRIX, I, C, lf, l, "mlp.gate_proj.weight");
        lp->gateb = c->mlp_bias ? add_param(m, cap, P_BIAS, I, 0, lf, l, "mlp.gate_proj.bias") : -1;
        lp->up = add_param(m, cap, P_MATRIX, I, C, lf, l, "mlp.up_proj.weight");
        lp->upb = c->mlp_bias ? add_param(m, cap, P_BIAS, I, 0, lf, l, "mlp.up_proj.bias") : -1;
        lp->down = add_param(m, cap, P_MATRIX, C, I, lf, l, "mlp.down_proj.weight");
        lp->downb = c->mlp_bias ? add_param(m, cap, P_BIAS, C, 0, lf, l, "mlp.down_proj.bias") : -1;
        lp->ln1 = add_param(m, cap, P_NORM, C, 0, lf, l, "input_layernorm.weight");
        lp->ln2 = add_param(m, cap, P_NORM, C, 0, lf, l, "post_attention_layernorm.weight");
    }
    m->norm = add_param(m, cap, P_NORM, C, 0, "model.norm.weight", -1, NULL);
    m->lm_head = c->tie_word_embeddings
                     ? m->embed
                     : add_param(m, cap, P_MATRIX, c->vocab_size, C, "lm_head.weight", -1, NULL);
    return AHA_OK;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int d = 0; d < ndim && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Every tensor of the table present in f with its shape; checked before anything is allocated,
 * so a config.json that lies about sizes costs nothing. */
static aha_status check_file(const aha_model *m, const aha_st_file *f, const char *dir, aha_err *err)
{
    for (int i = 0; i < m->n_params; i++) {
        const param *p = &m->params[i];
        const aha_st_tensor *t = aha_st_find(f, p->name);
        if (!t)
            return aha_errf(err, AHA_EFORMAT, "model %s: tensor '%s' is missing from the checkpoint", dir, p->name);
        bool same = t->ndim == p->info.ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == p->info.shape[d];
        if (!same) {
            char a[96], b[96];
            shape_str(a, sizeof a, t->ndim, t->shape);
            shape_str(b, sizeof b, p->info.ndim, p->info.shape);
            return aha_errf(err, AHA_EFORMAT, "model %s: tensor '%s' has shape %s but config.json implies %s", dir,
                            p->name, a, b);
        }
        if (t->dtype != AHA_DT_F32 && t->dtype != AHA_DT_BF16 && t->dtype != AHA_DT_F16)
            return aha_errf(err, AHA_EFORMAT, "model %s: tensor '%s' is %s (F32, BF16 or F16 expected)", dir, p->name,
                            aha_dtype_name(t->dtype));
    }
    return AHA_OK;
}

/* host staging (the largest parameter) and the device weight buffers */
static aha_status model_alloc(aha_model *m, aha_err *err)
{
    aha_backend *be = m->be;
    int64_t biggest = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].info.numel > biggest) biggest = m->params[i].info.numel;
    m->host_tmp = malloc((size_t)biggest * sizeof(float));
    m->host_tmp16 = malloc((size_t)biggest * sizeof(uint16_t));
    if (!m->host_tmp || !m->host_tmp16) return aha_errf(err, AHA_ENOMEM, "model: host staging");
    AHA_TRY(OPS(m)->buf_alloc(be, (size_t)m->numel * aha_dtype_size(be->act_dtype), &m->wbuf, err));
    m->w = (aha_tensor){OPS(m)->buf_base(m->wbuf), be->act_dtype};
    if (be->act_dtype == AHA_DT_F32) {
        m->master = m->w;
    } else if (m->opts.training) {
        AHA_TRY(OPS(m)->buf_alloc(be, (size_t)m->numel * sizeof(float), &m->mbuf, err));
        m->master = (aha_tensor){OPS(m)->buf_base(m->mbuf), AHA_DT_F32};
    } else {
        m->master = aha_tensor_none();
    }
    return AHA_OK;
}

/* check (a file, when given) then allocate */
static aha_status model_new(const aha_model_config *cfg, aha_backend *be, const aha_model_opts *opts,
                            const aha_st_file *f, const char *dir, aha_model **out, aha_err *err)
{
    *out = NULL;
    AHA_TRY(check_config(cfg, err));
    aha_model *m = calloc(1, sizeof *m);
    if (!m) return aha_errf(err, AHA_ENOMEM, "model: out of memory");
    m->cfg = *cfg;
    m->be = be;
    if (opts) m->opts = *opts;
    if (m->opts.max_batch_tokens <= 0) m->opts.max_batch_tokens = 512;
    if (m->opts.logits_chunk_rows <= 0) m->opts.logits_chunk_rows = 256;
    aha_status st = build_table(m, err);
    if (st == AHA_OK && f) st = check_file(m, f, dir, err);
    if (st == AHA_OK) st = model_alloc(m, err);
    if (st != AHA_OK) {
        aha_model_free(m);
        return st;
    }
    *out = m;
    return AHA_OK;
}

static void acts_release(aha_model *m)
{
    acts *a = &m->a;
    if (a->buf) OPS(m)->buf_free(BE(m), a->buf);
    free(a->res);
    free(a->la);
    free(a->h_pos);
    free(a->h_targets);
    free(a->h_cu);
    free(a->h_slots);
    free(a->h_lens);
    free(a->h_idx);
    free(a->h_sel);
    free(a->h_old);
    free(a->h_ref);
    free(a->h_adv);
    free(a->h_weight);
    free(a->h_mask);
    free(a->h_lp);
    memset(a, 0, sizeof *a);
}

void aha_model_free(aha_model *m)
{
    if (!m) return;
    if (m->train) m->train->m = NULL;
    acts_release(m);
    if (m->wbuf) OPS(m)->buf_free(BE(m), m->wbuf);
    if (m->mbuf) OPS(m)->buf_free(BE(m), m->mbuf);
    free(m->params);
    free(m->layers);
    free(m->host_tmp);
    free(m->host_tmp16);
    free(m);
}

const aha_model_config *aha_model_cfg(const aha_model *m) { return &m->cfg; }
aha_backend *aha_model_backend(const aha_model *m) { return m->be; }
int aha_model_n_params(const aha_model *m) { return m->n_params; }
int64_t aha_model_numel(const aha_model *m) { return m->numel; }

int64_t aha_model_param_count(const aha_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += m->params[i].info.numel;
    return n;
}
int64_t aha_model_param_offset(const aha_model *m, int i) { return m->params[i].off; }

const aha_param_info *aha_model_param(const aha_model *m, int i)
{
    if (i < 0 || i >= m->n_params) return NULL;
    return &m->params[i].info;
}

int aha_model_param_find(const aha_model *m, const char *name)
{
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return i;
    return -1;
}

aha_tensor aha_model_weights(aha_model *m, int64_t *numel)
{
    if (numel) *numel = m->numel;
    return m->w;
}

/* ---- parameter transfer ------------------------------------------------------------------- */

static aha_status param_upload(aha_model *m, int i, const float *src, const uint16_t *src16,
                               aha_err *err)
{
    const param *p = &m->params[i];
    size_t n = (size_t)p->info.numel;
    aha_dtype dt = m->be->act_dtype;
    if (dt == AHA_DT_F32) {
        if (src) return OPS(m)->to_device(BE(m), W(m, i), src, n * sizeof(float), err);
        for (size_t j = 0; j < n; j++) m->host_tmp[j] = aha_bf16_to_f32(src16[j]);
        return OPS(m)->to_device(BE(m), W(m, i), m->host_tmp, n * sizeof(float), err);
    }
    if (dt != AHA_DT_BF16)
        return aha_errf(err, AHA_EUNSUPPORTED, "model: compute dtype %s", aha_dtype_name(dt));
    if (src) {
        for (size_t j = 0; j < n; j++) m->host_tmp16[j] = aha_f32_to_bf16(src[j]);
        TRY_OP(OPS(m)->to_device(BE(m), W(m, i), m->host_tmp16, n * 2, err));
        if (!aha_tensor_is_none(m->master))
            TRY_OP(OPS(m)->to_device(BE(m), aha_tensor_at(m->master, p->off), src, n * sizeof(float), err));
        return AHA_OK;
    }
    TRY_OP(OPS(m)->to_device(BE(m), W(m, i), src16, n * 2, err));
    if (!aha_tensor_is_none(m->master)) {
        for (size_t j = 0; j < n; j++) m->host_tmp[j] = aha_bf16_to_f32(src16[j]);
        TRY_OP(OPS(m)->to_device(BE(m), aha_tensor_at(m->master, p->off), m->host_tmp,
                                 n * sizeof(float), err));
    }
    return AHA_OK;
}

aha_status aha_model_param_set_f32(aha_model *m, int i, const float *src, aha_err *err)
{
    if (i < 0 || i >= m->n_params) return aha_errf(err, AHA_EINVAL, "model: parameter %d out of range", i);
    return param_upload(m, i, src, NULL, err);
}

aha_status aha_model_param_set_bf16(aha_model *m, int i, const uint16_t *src, aha_err *err)
{
    if (i < 0 || i >= m->n_params) return aha_errf(err, AHA_EINVAL, "model: parameter %d out of range", i);
    return param_upload(m, i, NULL, src, err);
}

aha_status aha_model_set_params_from_host(aha_model *m, const aha_param_update *u, int n, aha_err *err)
{
    if (n < 0 || (n > 0 && !u)) return aha_errf(err, AHA_EINVAL, "set params: no updates");
    unsigned char *seen = calloc((size_t)m->n_params + 1, 1);
    if (!seen) return aha_errf(err, AHA_ENOMEM, "set params: out of memory");
    aha_status st = AHA_OK;
    for (int k = 0; k < n && st == AHA_OK; k++) {
        int i = u[k].param;
        if (i < 0 || i >= m->n_params)
            st = aha_errf(err, AHA_EINVAL, "set params: entry %d names parameter %d of %d", k, i, m->n_params);
        else if (u[k].dtype != AHA_DT_F32 && u[k].dtype != AHA_DT_BF16)
            st = aha_errf(err, AHA_EINVAL, "set params: '%s' given as %s (F32 or BF16 expected)", m->params[i].name,
                          aha_dtype_name(u[k].dtype));
        else if (!u[k].data)
            st = aha_errf(err, AHA_EINVAL, "set params: '%s' has no data", m->params[i].name);
        else if (seen[i]++)
            st = aha_errf(err, AHA_EINVAL, "set params: '%s' appears twice", m->params[i].name);
    }
    free(seen);
    for (int k = 0; k < n && st == AHA_OK; k++)
        st = u[k].dtype == AHA_DT_F32 ? param_upload(m, u[k].param, u[k].data, NULL, err)
                                      : param_upload(m, u[k].param, NULL, u[k].data, err);
    return st;
}

aha_status aha_model_param_get_f32(aha_model *m, int i, float *dst, aha_err *err)
{
    if (i < 0 || i >= m->n_params) return aha_errf(err, AHA_EINVAL, "model: parameter %d out of range", i);
    const param *p = &m->params[i];
    size_t n = (size_t)p->info.numel;
    if (!aha_tensor_is_none(m->master))
        return OPS(m)->to_host(BE(m), dst, aha_tensor_at(m->master, p->off), n * sizeof(float), err);
    if (m->be->act_dtype == AHA_DT_BF16) {
        TRY_OP(OPS(m)->to_host(BE(m), m->host_tmp16, W(m, i), n * 2, err));
        for (size_t j = 0; j < n; j++) dst[j] = aha_bf16_to_f32(m->host_tmp16[j]);
        return AHA_OK;
    }
    return aha_errf(err, AHA_EUNSUPPORTED, "model: compute dtype %s", aha_dtype_name(m->be->act_dtype));
}

aha_status aha_model_param_get_bf16(aha_model *m, int i, uint16_t *dst, aha_err *err)
{
    if (i < 0 || i >= m->n_params) return aha_errf(err, AHA_EINVAL, "model: parameter %d out of range", i);
    size_t n = (size_t)m->params[i].info.numel;
    if (m->be->act_dtype == AHA_DT_BF16) return OPS(m)->to_host(BE(m), dst, W(m, i), n * 2, err);
    AHA_TRY(aha_model_param_get_f32(m, i, m->host_tmp, err));
    for (size_t j = 0; j < n; j++) dst[j] = aha_f32_to_bf16(m->host_tmp[j]);
    return AHA_OK;
}

/* ---- open / init / save ------------------------------------------------------------------ */


aha_status aha_model_open(const char *dir, aha_backend *be, const aha_model_opts *opts,
                          aha_model **out, aha_err *err)
{
    *out = NULL;
    aha_model_config cfg;
    aha_status st = aha_config_load(dir, &cfg, err);
    if (st != AHA_OK) return st;
    aha_st_file *f = NULL;
    st = aha_st_open(dir, &f, err);
    if (st != AHA_OK) return st;
    aha_model *m = NULL;
    st = model_new(&cfg, be, opts, f, dir, &m, err);
    for (int i = 0; st == AHA_OK && i < m->n_params; i++) {
        const param *p = &m->params[i];
        const aha_st_tensor *t = aha_st_find(f, p->name);
        if (t->dtype == AHA_DT_BF16 && be->act_dtype == AHA_DT_BF16 && aha_tensor_is_none(m->master)) {
            st = param_upload(m, i, NULL, t->data, err);
        } else {
            st = aha_st_to_f32(t, m->host_tmp, p->info.numel, err);
            if (st != AHA_OK) {
                aha_err_prefix(err, st, "model %s: tensor '%s'", dir, p->name);
                break;
            }
            st = param_upload(m, i, m->host_tmp, NULL, err);
        }
    }
    aha_st_close(f);
    if (st != AHA_OK) {
        aha_model_free(m);
        return st;
    }
    *out = m;
    return AHA_OK;
}

aha_status aha_model_init_random(const aha_model_config *cfg, uint64_t seed, aha_backend *be,
                                 const aha_model_opts *opts, aha_model **out, aha_err *err)
{
    aha_model *m = NULL;
    AHA_TRY(model_new(cfg, be, opts, NULL, NULL, &m, err));
    aha_rng rng;
    aha_rng_seed(&rng, seed, 0);
    float std = cfg->initializer_range > 0 ? cfg->initializer_range : 0.02f;
    aha_status st = AHA_OK;
    for (int i = 0; st == AHA_OK && i < m->n_params; i++) {
        const param *p = &m->params[i];
        int64_t n = p->info.numel;
        if (p->kind == P_NORM || p->kind == P_BIAS) {
            for (int64_t j = 0; j < n; j++) m->host_tmp[j] = p->kind == P_NORM ? 1.0f : 0.0f;
        } else {
            /* Box-Muller, both outputs of each pair used: half the transcendental work of
             * aha_rng_normal, which matters at billions of weights */
            for (int64_t j = 0; j < n; j += 2) {
                double u1 = aha_rng_f64(&rng), u2 = aha_rng_f64(&rng);
                if (u1 < 1e-300) u1 = 1e-300;
                double r = sqrt(-2.0 * log(u1)) * std, a = 6.283185307179586 * u2;
                m->host_tmp[j] = (float)(r * cos(a));
                if (j + 1 < n) m->host_tmp[j + 1] = (float)(r * sin(a));
            }
        }
        if (p->kind == P_EMBED && cfg->pad_token_id >= 0 && cfg->pad_token_id < cfg->vocab_size)
            memset(m->host_tmp + (size_t)cfg->pad_token_id * cfg->hidden_size, 0,
                   (size_t)cfg->hidden_size * sizeof(float));
        st = param_upload(m, i, m->host_tmp, NULL, err);
    }
    if (st != AHA_OK) {
        aha_model_free(m);
        return st;
    }
    *out = m;
    return AHA_OK;
}

aha_status aha_model_save(aha_model *m, const char *dir, aha_dtype dtype, size_t max_shard_bytes,
                          aha_err *err)
{
    if (dtype != AHA_DT_F32 && dtype != AHA_DT_BF16)
        return aha_errf(err, AHA_EINVAL, "model save: dtype must be F32 or BF16");
    AHA_TRY(aha_mkdirs(dir, err));
    float *host = malloc((size_t)m->numel * sizeof(float));
    aha_st_writer *w = aha_st_writer_new();
    aha_status st = host && w ? AHA_OK : aha_errf(err, AHA_ENOMEM, "model save: out of memory");
    for (int i = 0; st == AHA_OK && i < m->n_params; i++) {
        const param *p = &m->params[i];
        st = aha_model_param_get_f32(m, i, host + p->off, err);
        if (st == AHA_OK)
            st = aha_st_writer_add_f32_as(w, p->name, dtype, p->info.ndim, p->info.shape, host + p->off,
                                          err);
    }
    if (st == AHA_OK) st = aha_st_writer_set_metadata(w, "format", "pt", err);
    if (st == AHA_OK)
        st = aha_st_writer_save_sharded(w, dir, max_shard_bytes ? max_shard_bytes : ((size_t)2 << 30), err);
    if (st == AHA_OK) {
        aha_model_config c = m->cfg;
        st = aha_config_save(&c, dir, err);
    }
    aha_st_writer_free(w);
    free(host);
    return st;
}

/* ---- activation arena ------------------------------------------------------------------- */

typedef struct {
    char *base; /* NULL while measuring */
    size_t off;
} carver;

static aha_tensor carve(carver *cv, aha_dtype dt, int64_t n)
{
    size_t bytes = ((size_t)n * aha_dtype_size(dt) + 255) / 256 * 256;
    aha_tensor t = {cv->base ? cv->base + cv->off : NULL, dt};
    cv->off += bytes;
    return t;
}

static bool qkv_fused(const aha_model *m, const layer_params *p);

static void carve_acts(aha_model *m, acts *a, carver *cv, int N, bool train)
{
    const aha_model_config *c = &m->cfg;
    int L = c->num_layers, C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int64_t HD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    aha_dtype ad = m->be->act_dtype, f = AHA_DT_F32, i32 = AHA_DT_I32;
    int slots = train ? L : 1;
    for (int r = 0; r <= L; r++) a->res[r] = (train || r == 0) ? carve(cv, ad, (int64_t)N * C) : a->res[0];
    for (int l = 0; l < L; l++) {
        layer_acts *x = &a->la[l];
        if (l >= slots) {
            *x = a->la[0];
            continue;
        }
        x->h1 = carve(cv, ad, (int64_t)N * C);
        x->rstd1 = carve(cv, f, N);
        x->q = carve(cv, ad, N * HD);
        x->k = carve(cv, ad, N * KD);
        x->v = carve(cv, ad, N * KD);
        if (c->qk_norm) {
            x->qpre = carve(cv, ad, N * HD);
            x->kpre = carve(cv, ad, N * KD);
            x->qrstd = carve(cv, f, (int64_t)N * c->num_heads);
            x->krstd = carve(cv, f, (int64_t)N * c->num_kv_heads);
        }
        x->att = carve(cv, ad, N * HD);
        x->lse = carve(cv, f, (int64_t)N * c->num_heads);
        x->x2 = carve(cv, ad, (int64_t)N * C);
        x->h2 = carve(cv, ad, (int64_t)N * C);
        x->rstd2 = carve(cv, f, N);
        x->g = carve(cv, ad, (int64_t)N * I);
        x->u = carve(cv, ad, (int64_t)N * I);
        x->a = carve(cv, ad, (int64_t)N * I);
    }
    /* every layer has the same layout: the first says whether forward fuses q, k and v */
    a->qkv = qkv_fused(m, &m->layers[0]) ? carve(cv, ad, N * (HD + 2 * KD)) : aha_tensor_none();
    a->hf = carve(cv, ad, (int64_t)N * C);
    a->rstdf = carve(cv, f, N);
    a->logits = carve(cv, ad, (int64_t)a->chunk * V);
    a->logits32 = ad == f ? a->logits : carve(cv, f, (int64_t)a->chunk * V);
    a->lp = carve(cv, f, N);
    a->lse = carve(cv, f, N);
    a->dlp = carve(cv, f, N);
    a->sel = carve(cv, i32, N);
    a->hsel = carve(cv, ad, (int64_t)N * C);
    if (train) {
        a->dres = carve(cv, ad, (int64_t)N * C);
        a->dh = carve(cv, ad, (int64_t)N * C);
        a->dq = carve(cv, ad, N * HD);
        a->dk = carve(cv, ad, N * KD);
        a->dv = carve(cv, ad, N * KD);
        a->datt = carve(cv, ad, N * HD);
        a->dkpre = c->qk_norm ? carve(cv, ad, N * KD) : aha_tensor_none();
        a->dg = carve(cv, ad, (int64_t)N * I);
        a->du = carve(cv, ad, (int64_t)N * I);
        a->da = carve(cv, ad, (int64_t)N * I);
        a->dhsel = carve(cv, ad, (int64_t)N * C);
    }
    a->ids = carve(cv, i32, N);
    a->pos = carve(cv, i32, N);
    a->targets = carve(cv, i32, N);
    a->cu = carve(cv, i32, (int64_t)N + 1);
    a->slots = carve(cv, i32, N);
    a->lens = carve(cv, i32, N);
    a->old = carve(cv, f, N);
    a->ref = carve(cv, f, N);
    a->adv = carve(cv, f, N);
    a->weight = carve(cv, f, N);
    a->mask = carve(cv, f, N);
    a->stats = carve(cv, f, 16);
}

/* byte offset of t from a->ids inside the arena, and the span ids .. lens[n) */
static size_t idx_off(const acts *a, aha_tensor t) { return (size_t)((const char *)t.data - (const char *)a->ids.data); }
static size_t idx_span(const acts *a, int n) { return idx_off(a, a->lens) + (size_t)n * 4; }

/* Make the arena hold N tokens (train: all layers and the backward buffers). */
static aha_status acts_ensure(aha_model *m, int N, bool train, aha_err *err)
{
    acts *a = &m->a;
    if (a->buf && a->cap >= N && (a->train || !train)) return AHA_OK;
    int cap = N > a->cap ? N : a->cap;
    if (cap < m->opts.max_batch_tokens) cap = m->opts.max_batch_tokens;
    bool tr = train || (a->buf && a->train);
    acts_release(m);
    int L = m->cfg.num_layers;
    a->cap = cap;
    a->train = tr;
    a->chunk = m->opts.logits_chunk_rows;
    a->res = calloc((size_t)L + 1, sizeof *a->res);
    a->la = calloc((size_t)L, sizeof *a->la);
    size_t n1 = (size_t)cap + 1;
    a->h_pos = malloc(n1 * sizeof(int32_t));
    a->h_targets = malloc(n1 * sizeof(int32_t));
    a->h_cu = malloc(n1 * sizeof(int32_t));
    a->h_slots = malloc(n1 * sizeof(int32_t));
    a->h_lens = malloc(n1 * sizeof(int32_t));
    a->h_sel = malloc(n1 * sizeof(int32_t));
    a->h_old = malloc(n1 * sizeof(float));
    a->h_ref = malloc(n1 * sizeof(float));
    a->h_adv = malloc(n1 * sizeof(float));
    a->h_weight = malloc(n1 * sizeof(float));
    a->h_mask = malloc(n1 * sizeof(float));
    a->h_lp = malloc(n1 * sizeof(float));
    if (!a->res || !a->la || !a->h_pos || !a->h_targets || !a->h_cu || !a->h_slots || !a->h_lens || !a->h_sel ||
        !a->h_old || !a->h_ref || !a->h_adv || !a->h_weight || !a->h_mask || !a->h_lp) {
        acts_release(m);
        return aha_errf(err, AHA_ENOMEM, "model: activation staging for %d tokens", cap);
    }
    carver cv = {NULL, 0};
    carve_acts(m, a, &cv, cap, tr);
    aha_status st = OPS(m)->buf_alloc(BE(m), cv.off, &a->buf, err);
    if (st != AHA_OK) {
        acts_release(m);
        return aha_err_prefix(err, st, "model: activations for %d tokens", cap);
    }
    cv.base = OPS(m)->buf_base(a->buf);
    cv.off = 0;
    carve_acts(m, a, &cv, cap, tr);
    a->h_idx = calloc(idx_span(a, cap), 1);
    if (!a->h_idx) {
        acts_release(m);
        return aha_errf(err, AHA_ENOMEM, "model: index staging for %d tokens", cap);
    }
    return AHA_OK;
}

/* ---- forward --------------------------------------------------------------------------- */

typedef enum {
    ATT_PACKED, /* attention_fwd over cu_seqlens (a.cu uploaded) */
    ATT_CACHED, /* attention_cached over the cache (a.slots, a.lens uploaded) */
} att_mode;

typedef struct {
    int N, n_seqs, max_seqlen;
    att_mode mode;
    aha_kv_cache *cache; /* when set, k and v rows are stored at (a.slots, a.pos) */
} fwd_args;

static aha_tensor cache_k(const aha_kv_cache *c, int l) { return aha_tensor_at(c->base, (int64_t)(2 * l) * c->slab); }
static aha_tensor cache_v(const aha_kv_cache *c, int l) { return aha_tensor_at(c->base, (int64_t)(2 * l + 1) * c->slab); }

/* Pairs of products that share their input (k and v of h1; gate and up of h2) go to the
 * backend as one strided batch when it offers one: their weights (and biases, both present or
 * both absent) sit a fixed distance apart in the weight buffer, their outputs in the arena. */
static int64_t elem_dist(aha_tensor a, aha_tensor b)
{
    return (int64_t)(((char *)b.data - (char *)a.data) / (ptrdiff_t)aha_dtype_size(a.dt));
}
static int64_t pdist(const aha_model *m, int i, int j) { return m->params[j].off - m->params[i].off; }
static bool kv_batched(const aha_model *m, const layer_params *p)
{
    return OPS(m)->matmul_batched && !m->cfg.qk_norm && (p->kb < 0) == (p->vb < 0);
}
/* q, k and v as one product (rope_qkv splits it): the three weights (and biases, all or none)
 * contiguous with no alignment padding between them */
static bool qkv_fused(const aha_model *m, const layer_params *p)
{
    const aha_model_config *c = &m->cfg;
    int64_t HD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    int64_t C = c->hidden_size;
    if (!OPS(m)->rope_qkv || c->qk_norm) return false;
    if (pdist(m, p->q, p->k) != HD * C || pdist(m, p->k, p->v) != KD * C) return false;
    if ((p->qb < 0) != (p->kb < 0) || (p->kb < 0) != (p->vb < 0)) return false;
    return p->qb < 0 || (pdist(m, p->qb, p->kb) == HD && pdist(m, p->kb, p->vb) == KD);
}
static bool gu_batched(const aha_model *m, const layer_params *p)
{
    return OPS(m)->matmul_batched && (p->gateb < 0) == (p->upb < 0);
}

/* Embedding + layers + final norm into a.hf (a.ids, a.pos and the attention indexes uploaded). */
static aha_status forward(aha_model *m, const fwd_args *fa, aha_err *err)
{
    const aha_model_config *c = &m->cfg;
    const aha_backend_ops *o = OPS(m);
    aha_backend *be = BE(m);
    acts *a = &m->a;
    int N = fa->N, C = c->hidden_size, I = c->intermediate_size, H = c->num_heads,
        KV = c->num_kv_heads, D = c->head_dim;
    int HD = H * D, KD = KV * D;
    float eps = (float)c->rms_norm_eps, theta = (float)c->rope_theta;
    /* with add_rmsnorm, each residual add also makes the next norm (the next layer's h1, or
     * hf after the last layer); the values are the same as add + rmsnorm_fwd */
    bool fuse = o->add_rmsnorm != NULL;
    TRY_OP(o->embedding_fwd(be, a->res[0], a->ids, W(m, m->embed), N, C, err));
    for (int l = 0; l < c->num_layers; l++) {
        const layer_params *p = &m->layers[l];
        layer_acts *x = &a->la[l];
        aha_tensor xin = a->res[l], xout = a->res[l + 1];
        if (l == 0 || !fuse) TRY_OP(o->rmsnorm_fwd(be, x->h1, x->rstd1, xin, W(m, p->ln1), N, C, eps, err));
        if (qkv_fused(m, p)) {
            /* decode reads k and v from the cache only: they are not written out */
            bool cached = fa->mode != ATT_PACKED;
            TRY_OP(o->matmul(be, a->qkv, x->h1, W(m, p->q), Wopt(m, p->qb), N, C, HD + 2 * KD, err));
            TRY_OP(o->rope_qkv(be, a->qkv, x->q, cached ? aha_tensor_none() : x->k, cached ? aha_tensor_none() : x->v,
                               fa->cache ? cache_k(fa->cache, l) : aha_tensor_none(),
                               fa->cache ? cache_v(fa->cache, l) : aha_tensor_none(), a->slots, a->pos, N, H, KV, D,
                               fa->cache ? fa->cache->max_seq : 0, theta, err));
        } else {
    if (c->qk_norm) {
                TRY_OP(o->matmul(be, x->qpre, x->h1, W(m, p->q), Wopt(m, p->qb), N, C, HD, err));
                TRY_OP(o->matmul(be, x->kpre, x->h1, W(m, p->k), Wopt(m, p->kb), N, C, KD, err));
                TRY_OP(o->rmsnorm_fwd(be, x->q, x->qrstd, x->qpre, W(m, p->qn), N * H, D, eps, err));
                TRY_OP(o->rmsnorm_fwd(be, x->k, x->krstd, x->kpre, W(m, p->kn), N * KV, D, eps, err));
            } else {
                TRY_OP(o->matmul(be, x->q, x->h1, W(m, p->q), Wopt(m, p->qb), N, C, HD, err));
                if (!kv_batched(m, p))
                    TRY_OP(o->matmul(be, x->k, x->h1, W(m, p->k), Wopt(m, p->kb), N, C, KD, err));
            }
            if (kv_batched(m, p) && !c->qk_norm)
                TRY_OP(o->matmul_batched(be, x->k, elem_dist(x->k, x->v), x->h1, W(m, p->k), pdist(m, p->k, p->v),
                                         Wopt(m, p->kb), p->kb >= 0 ? pdist(m, p->kb, p->vb) : 0, N, C, KD, 2, err));
            else
                TRY_OP(o->matmul(be, x->v, x->h1, W(m, p->v), Wopt(m, p->vb), N, C, KD, err));
            if (o->rope_qk_store) {
                aha_tensor kc = fa->cache ? cache_k(fa->cache, l) : aha_tensor_none(),
                           vc = fa->cache ? cache_v(fa->cache, l) : aha_tensor_none();
                TRY_OP(o->rope_qk_store(be, x->q, x->k, x->v, kc, vc, a->slots, a->pos, N, H, KV, D,
                                        fa->cache ? fa->cache->max_seq : 0, theta, err));
            } else {
                TRY_OP(o->rope_fwd(be, x->q, a->pos, N, H, D, theta, err));
                TRY_OP(o->rope_fwd(be, x->k, a->pos, N, KV, D, theta, err));
                if (fa->cache)
                    TRY_OP(o->kv_store(be, cache_k(fa->cache, l), cache_v(fa->cache, l), x->k, x->v, a->slots,
                                       a->pos, N, KV, D, fa->cache->max_seq, err));
            }
        }
        if (fa->mode == ATT_PACKED)
            TRY_OP(o->attention_fwd(be, x->att, x->lse, x->q, x->k, x->v, a->cu, fa->n_seqs, N, H, KV, D,
                                    fa->max_seqlen, err));
        else
            TRY_OP(o->attention_cached(be, x->att, x->q, cache_k(fa->cache, l), cache_v(fa->cache, l),
                                       a->slots, a->lens, N, H, KV, D, fa->cache->max_seq, err));
        /* x2 = x + att Wo^T: the projection lands in x2, then the residual is added in place */
        TRY_OP(o->matmul(be, x->x2, x->att, W(m, p->o), Wopt(m, p->ob), N, HD, C, err));
        if (fuse) {
            TRY_OP(o->add_rmsnorm(be, x->x2, x->h2, x->rstd2, x->x2, xin, W(m, p->ln2), N, C, eps, err));
        } else {
            TRY_OP(o->add(be, x->x2, x->x2, xin, (int64_t)N * C, err));
            TRY_OP(o->rmsnorm_fwd(be, x->h2, x->rstd2, x->x2, W(m, p->ln2), N, C, eps, err));
        }
        if (gu_batched(m, p)) {
            TRY_OP(o->matmul_batched(be, x->g, elem_dist(x->g, x->u), x->h2, W(m, p->gate), pdist(m, p->gate, p->up),
                                     Wopt(m, p->gateb), p->gateb >= 0 ? pdist(m, p->gateb, p->upb) : 0, N, C, I, 2,
                                     err));
        } else {
            TRY_OP(o->matmul(be, x->g, x->h2, W(m, p->gate), Wopt(m, p->gateb), N, C, I, err));
            TRY_OP(o->matmul(be, x->u, x->h2, W(m, p->up), Wopt(m, p->upb), N, C, I, err));
        }
        TRY_OP(o->swiglu_fwd(be, x->a, x->g, x->u, (int64_t)N * I, err));
        /* xout may alias xin (inference): xin is dead once x2 exists */
        TRY_OP(o->matmul(be, xout, x->a, W(m, p->down), Wopt(m, p->downb), N, I, C, err));
        if (!fuse) {
            TRY_OP(o->add(be, xout, xout, x->x2, (int64_t)N * C, err));
        } else if (l + 1 < c->num_layers) {
            layer_acts *nx = &a->la[l + 1];
            TRY_OP(o->add_rmsnorm(be, xout, nx->h1, nx->rstd1, xout, x->x2, W(m, m->layers[l + 1].ln1), N, C, eps,
                                  err));
        } else {
            TRY_OP(o->add_rmsnorm(be, xout, a->hf, a->rstdf, xout, x->x2, W(m, m->norm), N, C, eps, err));
        }
    }
    if (!fuse) TRY_OP(o->rmsnorm_fwd(be, a->hf, a->rstdf, a->res[c->num_layers], W(m, m->norm), N, C, eps, err));
    return AHA_OK;
}

/* logits of rows [r0, r0 + n) of h (a.hf, or the gathered a.hsel) into a.logits */
static aha_status logits_of(aha_model *m, aha_tensor h, int r0, int n, aha_err *err)
{
    int C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    return OPS(m)->matmul(BE(m), m->a.logits, aha_tensor_at(h, (int64_t)r0 * C), W(m, m->lm_head),
                          aha_tensor_none(), n, C, V, err);
}

static aha_status logits_rows(aha_model *m, int r0, int n, aha_err *err)
{
    return logits_of(m, m->a.hf, r0, n, err);
}

/* Keep only the rows flagged in keep (row layout, N): their indexes go to a.h_sel (and the
 * device a.sel), and each given row array is compacted in place. Returns the count. */
static int select_rows(aha_model *m, int N, const bool *keep, int32_t *i32s[], int n_i32, float *f32s[], int n_f32)
{
    acts *a = &m->a;
    int k = 0;
    for (int r = 0; r < N; r++) {
        if (!keep[r]) continue;
        a->h_sel[k] = r;
        for (int j = 0; j < n_i32; j++) i32s[j][k] = i32s[j][r];
        for (int j = 0; j < n_f32; j++) f32s[j][k] = f32s[j][r];
        k++;
    }
    return k;
}

/* a.logits (n rows) -> host fp32 */
static aha_status logits_to_host(aha_model *m, int n, float *dst, aha_err *err)
{
    int V = m->cfg.vocab_size;
    acts *a = &m->a;
    if (a->logits32.data != a->logits.data)
        TRY_OP(OPS(m)->copy(BE(m), a->logits32, a->logits, (int64_t)n * V, err));
    return OPS(m)->to_host(BE(m), dst, a->logits32, (size_t)n * V * sizeof(float), err);
}

aha_status aha_batch_check(const aha_model *m, const aha_batch *b, aha_err *err)
{
    if (!b || !b->ids || !b->cu_seqlens || b->n_seqs <= 0)
        return aha_errf(err, AHA_EINVAL, "batch: empty");
    if (b->cu_seqlens[0] != 0) return aha_errf(err, AHA_EINVAL, "batch: cu_seqlens[0] must be 0");
    for (int s = 0; s < b->n_seqs; s++)
        if (b->cu_seqlens[s + 1] <= b->cu_seqlens[s])
            return aha_errf(err, AHA_EINVAL, "batch: sequence %d is empty or cu_seqlens decreases", s);
    for (int s = 0; b->score_from && s < b->n_seqs; s++)
        if (b->score_from[s] < 1)
            return aha_errf(err, AHA_EINVAL, "batch: score_from[%d] = %d must be >= 1", s, b->score_from[s]);
    int N = b->cu_seqlens[b->n_seqs];
    for (int i = 0; i < N; i++)
        if (b->ids[i] < 0 || b->ids[i] >= m->cfg.vocab_size)
            return aha_errf(err, AHA_EINVAL, "batch: token %d has id %d outside the vocabulary [0, %d)",
                            i, b->ids[i], m->cfg.vocab_size);
    return AHA_OK;
}

/* Upload ids, positions, targets and cu_seqlens of a packed batch; returns max_seqlen. */
static aha_status upload_batch(aha_model *m, const aha_batch *b, int *max_seqlen, aha_err *err)
{
    acts *a = &m->a;
    int N = aha_batch_tokens(b), mx = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        int s0 = b->cu_seqlens[s], s1 = b->cu_seqlens[s + 1];
        if (s1 - s0 > mx) mx = s1 - s0;
        for (int t = s0; t < s1; t++) {
            a->h_pos[t] = t - s0;
            a->h_targets[t] = t + 1 < s1 ? b->ids[t + 1] : -1;
        }
    }
    *max_seqlen = mx;
    aha_backend *be = BE(m);
    TRY_OP(OPS(m)->to_device(be, a->ids, b->ids, (size_t)N * 4, err));
    TRY_OP(OPS(m)->to_device(be, a->pos, a->h_pos, (size_t)N * 4, err));
    TRY_OP(OPS(m)->to_device(be, a->targets, a->h_targets, (size_t)N * 4, err));
    TRY_OP(OPS(m)->to_device(be, a->cu, b->cu_seqlens, (size_t)(b->n_seqs + 1) * 4, err));
    return AHA_OK;
}

/* row t of sequence s (t < last) <-> logprob layout index t - s */
static void rows_to_layout(const aha_batch *b, const float *rows, float *layout)
{
    for (int s = 0; s < b->n_seqs; s++)
        for (int t = b->cu_seqlens[s]; t + 1 < b->cu_seqlens[s + 1]; t++) layout[t - s] = rows[t];
}

aha_status aha_model_token_logprobs(aha_model *m, const aha_batch *b, float *logprobs, float *logits,
                                    aha_err *err)
{
    AHA_TRY(aha_batch_check(m, b, err));
    int N = aha_batch_tokens(b), V = m->cfg.vocab_size;
    AHA_TRY(acts_ensure(m, N, false, err));
    acts *a = &m->a;
    fwd_args fa = {.N = N, .n_seqs = b->n_seqs, .mode = ATT_PACKED};
    AHA_TRY(upload_batch(m, b, &fa.max_seqlen, err));
    AHA_TRY(forward(m, &fa, err));
    if (logits) {
        /* every row: the caller wants all the logits */
        for (int r0 = 0; r0 < N; r0 += a->chunk) {
            int n = N - r0 < a->chunk ? N - r0 : a->chunk;
            AHA_TRY(logits_rows(m, r0, n, err));
            TRY_OP(OPS(m)->logprob_fwd(BE(m), aha_tensor_at(a->lp, r0), aha_tensor_at(a->lse, r0), a->logits,
                                       aha_tensor_at(a->targets, r0), n, V, err));
            AHA_TRY(logits_to_host(m, n, logits + (size_t)r0 * V, err));
        }
        TRY_OP(OPS(m)->to_host(BE(m), a->h_lp, a->lp, (size_t)N * sizeof(float), err));
        if (logprobs) rows_to_layout(b, a->h_lp, logprobs);
        return AHA_OK;
    }
    /* only rows predicting a scored position reach the lm_head: gathered into a.hsel */
    bool *keep = (bool *)a->h_lp; /* h_lp is free until the results come back */
    for (int s = 0; s < b->n_seqs; s++) {
        int s0 = b->cu_seqlens[s], s1 = b->cu_seqlens[s + 1], from = b->score_from ? b->score_from[s] : 1;
        for (int r = s0; r < s1; r++) keep[r] = r + 1 < s1 && r + 1 - s0 >= from;
    }
    int32_t *ia[1] = {a->h_targets};
    int ns = select_rows(m, N, keep, ia, 1, NULL, 0);
    TRY_OP(OPS(m)->to_device(BE(m), a->sel, a->h_sel, (size_t)ns * 4, err));
    TRY_OP(OPS(m)->to_device(BE(m), a->targets, a->h_targets, (size_t)ns * 4, err));
    TRY_OP(OPS(m)->embedding_fwd(BE(m), a->hsel, a->sel, a->hf, ns, m->cfg.hidden_size, err));
    for (int r0 = 0; r0 < ns; r0 += a->chunk) {
        int n = ns - r0 < a->chunk ? ns - r0 : a->chunk;
        AHA_TRY(logits_of(m, a->hsel, r0, n, err));
        TRY_OP(OPS(m)->logprob_fwd(BE(m), aha_tensor_at(a->lp, r0), aha_tensor_at(a->lse, r0), a->logits,
                                   aha_tensor_at(a->targets, r0), n, V, err));
    }
    float *lpc = a->h_old; /* compact results; h_old is free while scoring */
    TRY_OP(OPS(m)->to_host(BE(m), lpc, a->lp, (size_t)ns * sizeof(float), err));
    memset(a->h_lp, 0, (size_t)N * sizeof(float));
    for (int k = 0; k < ns; k++) a->h_lp[a->h_sel[k]] = lpc[k];
    if (logprobs) rows_to_layout(b, a->h_lp, logprobs);
    return AHA_OK;
}

/* ---- backward ------------------------------------------------------------------------- */

typedef enum { LOSS_GRPO, LOSS_SFT } loss_kind;

/* Chunked head over ns rows: logits -> logprobs -> loss -> dlogits -> d hf (into a.dh) and
 * lm_head grads. With a selection (sel), the ns rows are gathered from a.hf into a.hsel and
 * their gradient scattered back into a zeroed a.dh; otherwise all N rows are used in place. */
static aha_status head_train(aha_model *m, aha_train *t, int N, int ns, bool sel, loss_kind kind,
                             const aha_grpo_args *ga, aha_err *err)
{
    const aha_backend_ops *o = OPS(m);
    aha_backend *be = BE(m);
    acts *a = &m->a;
    int C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    aha_tensor hsrc = a->hf, dhdst = a->dh;
    if (sel) {
        TRY_OP(o->embedding_fwd(be, a->hsel, a->sel, a->hf, ns, C, err));
        hsrc = a->hsel;
        dhdst = a->dhsel;
    } else {
        AHA_ASSERT(ns == N);
    }
    for (int r0 = 0; r0 < ns; r0 += a->chunk) {
        int n = ns - r0 < a->chunk ? ns - r0 : a->chunk;
        aha_tensor lp = aha_tensor_at(a->lp, r0), dlp = aha_tensor_at(a->dlp, r0),
                   lse = aha_tensor_at(a->lse, r0), tg = aha_tensor_at(a->targets, r0),
                   w = aha_tensor_at(a->weight, r0);
        AHA_TRY(logits_of(m, hsrc, r0, n, err));
        TRY_OP(o->logprob_fwd(be, lp, lse, a->logits, tg, n, V, err));
        if (kind == LOSS_GRPO)
            TRY_OP(o->grpo_loss(be, dlp, a->stats, lp, aha_tensor_at(a->old, r0),
                                ga->ref_logprobs ? aha_tensor_at(a->ref, r0) : aha_tensor_none(),
                                aha_tensor_at(a->adv, r0), w, aha_tensor_at(a->mask, r0), n,
                                ga->eps_low, ga->eps_high, ga->beta, err));
        else
            TRY_OP(o->sft_loss(be, dlp, a->stats, lp, w, n, err));
        TRY_OP(o->logprob_bwd(be, a->logits, a->logits, lse, tg, dlp, n, V, err));
        TRY_OP(o->matmul_bwd_dx(be, aha_tensor_at(dhdst, (int64_t)r0 * C), a->logits, W(m, m->lm_head), n,
                                C, V, false, err));
        TRY_OP(o->matmul_bwd_dw(be, G(t, m->lm_head), aha_tensor_none(), a->logits,
                                aha_tensor_at(hsrc, (int64_t)r0 * C), n, C, V, err));
    }
    if (sel) {
        TRY_OP(o->fill(be, a->dh, (int64_t)N * C, 0.0f, err));
        TRY_OP(o->scatter_rows(be, a->dh, a->sel, a->dhsel, ns, C, err));
    }
    return AHA_OK;
}

/* From d hf (in a.dh) back through the layers to the embedding. */
static aha_status backward(aha_model *m, aha_train *t, const fwd_args *fa, aha_err *err)
{
    const aha_model_config *c = &m->cfg;
    const aha_backend_ops *o = OPS(m);
    aha_backend *be = BE(m);
    acts *a = &m->a;
    int N = fa->N, C = c->hidden_size, I = c->intermediate_size, H = c->num_heads,
        KV = c->num_kv_heads, D = c->head_dim;
    int HD = H * D, KD = KV * D;
    float theta = (float)c->rope_theta;
    TRY_OP(o->rmsnorm_bwd(be, a->dres, G(t, m->norm), a->dh, a->res[c->num_layers], W(m, m->norm), a->rstdf,
                          N, C, false, err));
    for (int l = c->num_layers - 1; l >= 0; l--) {
        const layer_params *p = &m->layers[l];
        layer_acts *x = &a->la[l];
        /* MLP: dres is the gradient of the down projection's output */
        TRY_OP(o->matmul_bwd_dw(be, G(t, p->down), Gopt(t, p->downb), a->dres, x->a, N, I, C, err));
        TRY_OP(o->matmul_bwd_dx(be, a->da, a->dres, W(m, p->down), N, I, C, false, err));
        TRY_OP(o->swiglu_bwd(be, a->dg, a->du, a->da, x->g, x->u, (int64_t)N * I, err));
        if (gu_batched(m, p) && o->matmul_bwd_dw_batched) {
            TRY_OP(o->matmul_bwd_dw_batched(be, G(t, p->gate), pdist(m, p->gate, p->up), Gopt(t, p->gateb),
                                            p->gateb >= 0 ? pdist(m, p->gateb, p->upb) : 0, a->dg,
                                            elem_dist(a->dg, a->du), x->h2, N, C, I, 2, err));
        } else {
            TRY_OP(o->matmul_bwd_dw(be, G(t, p->gate), Gopt(t, p->gateb), a->dg, x->h2, N, C, I, err));
            TRY_OP(o->matmul_bwd_dw(be, G(t, p->up), Gopt(t, p->upb), a->du, x->h2, N, C, I, err));
        }
        TRY_OP(o->matmul_bwd_dx(be, a->dh, a->dg, W(m, p->gate), N, C, I, false, err));
        TRY_OP(o->matmul_bwd_dx(be, a->dh, a->du, W(m, p->up), N, C, I, true, err));
        TRY_OP(o->rmsnorm_bwd(be, a->dres, G(t, p->ln2), a->dh, x->x2, W(m, p->ln2), x->rstd2, N, C, true, err));
        /* attention: dres is now d x2, the gradient of the o projection's output */
        TRY_OP(o->matmul_bwd_dw(be, G(t, p->o), Gopt(t, p->ob), a->dres, x->att, N, HD, C, err));
        TRY_OP(o->matmul_bwd_dx(be, a->datt, a->dres, W(m, p->o), N, HD, C, false, err));
        TRY_OP(o->attention_bwd(be, a->dq, a->dk, a->dv, a->datt, x->q, x->k, x->v, x->att, x->lse, a->cu,
                                fa->n_seqs, N, H, KV, D, fa->max_seqlen, err));
        TRY_OP(o->rope_bwd(be, a->dq, a->pos, N, H, D, theta, err));
        TRY_OP(o->rope_bwd(be, a->dk, a->pos, N, KV, D, theta, err));
        aha_tensor dq = a->dq, dk = a->dk;
        if (c->qk_norm) {
            /* datt is free again: it takes the gradient of the pre-norm q */
            TRY_OP(o->rmsnorm_bwd(be, a->datt, G(t, p->qn), a->dq, x->qpre, W(m, p->qn), x->qrstd, N * H, D,
                                  false, err));
            TRY_OP(o->rmsnorm_bwd(be, a->dkpre, G(t, p->kn), a->dk, x->kpre, W(m, p->kn), x->krstd, N * KV,
                                  D, false, err));
            dq = a->datt;
            dk = a->dkpre;
        }
        TRY_OP(o->matmul_bwd_dw(be, G(t, p->q), Gopt(t, p->qb), dq, x->h1, N, C, HD, err));
        if (kv_batched(m, p) && o->matmul_bwd_dw_batched) {
            TRY_OP(o->matmul_bwd_dw_batched(be, G(t, p->k), pdist(m, p->k, p->v), Gopt(t, p->kb),
                                            p->kb >= 0 ? pdist(m, p->kb, p->vb) : 0, a->dk, elem_dist(a->dk, a->dv),
                                            x->h1, N, C, KD, 2, err));
        } else {
            TRY_OP(o->matmul_bwd_dw(be, G(t, p->k), Gopt(t, p->kb), dk, x->h1, N, C, KD, err));
            TRY_OP(o->matmul_bwd_dw(be, G(t, p->v), Gopt(t, p->vb), a->dv, x->h1, N, C, KD, err));
        }
        TRY_OP(o->matmul_bwd_dx(be, a->dh, dq, W(m, p->q), N, C, HD, false, err));
        TRY_OP(o->matmul_bwd_dx(be, a->dh, dk, W(m, p->k), N, C, KD, true, err));
        TRY_OP(o->matmul_bwd_dx(be, a->dh, a->dv, W(m, p->v), N, C, KD, true, err));
        TRY_OP(o->rmsnorm_bwd(be, a->dres, G(t, p->ln1), a->dh, a->res[l], W(m, p->ln1), x->rstd1, N, C, true,
                              err));
    }
    TRY_OP(o->embedding_bwd(be, G(t, m->embed), a->ids, a->dres, N, C, err));
    return AHA_OK;
}

static aha_status train_prepare(aha_model *m, aha_train *t, const aha_batch *b, fwd_args *fa, aha_err *err)
{
    if (!t || t->m != m) return aha_errf(err, AHA_EINVAL, "model: train state belongs to another model");
    AHA_TRY(aha_batch_check(m, b, err));
    int N = aha_batch_tokens(b);
    AHA_TRY(acts_ensure(m, N, true, err));
    memset(fa, 0, sizeof *fa);
    fa->N = N;
    fa->n_seqs = b->n_seqs;
    fa->mode = ATT_PACKED;
    AHA_TRY(upload_batch(m, b, &fa->max_seqlen, err));
    TRY_OP(OPS(m)->fill(BE(m), m->a.stats, 16, 0.0f, err));
    return AHA_OK;
}

static aha_status upload_f32(aha_model *m, aha_tensor dst, const float *src, int n, aha_err *err)
{
    return OPS(m)->to_device(BE(m), dst, src, (size_t)n * sizeof(float), err);
}

/* The training head's rows: when the backend can scatter rows back, only the rows flagged in
 * keep (those carrying loss) go through the lm_head; the row arrays f32s are compacted in place
 * and the selection and targets uploaded. Otherwise all N rows, arrays untouched. */
static aha_status train_select(aha_model *m, int N, const bool *keep, float *f32s[], int n_f32, int *ns,
                               bool *sel, aha_err *err)
{
    acts *a = &m->a;
    int cnt = 0;
    for (int r = 0; r < N; r++) cnt += keep[r];
    *ns = N;
    *sel = false;
    if (!OPS(m)->scatter_rows || cnt == N) return AHA_OK;
    int32_t *ia[1] = {a->h_targets};
    *ns = select_rows(m, N, keep, ia, 1, f32s, n_f32);
    *sel = true;
    TRY_OP(OPS(m)->to_device(BE(m), a->sel, a->h_sel, (size_t)*ns * 4, err));
    TRY_OP(OPS(m)->to_device(BE(m), a->targets, a->h_targets, (size_t)*ns * 4, err));
    return AHA_OK;
}

aha_status aha_model_grpo_backward(aha_model *m, aha_train *t, const aha_batch *b,
                                   const aha_grpo_args *args, aha_grpo_stats *stats, float *logprobs,
                                   aha_err *err)
{
    if (!args || !args->mask || !args->old_logprobs || !args->advantages)
        return aha_errf(err, AHA_EINVAL, "grpo: mask, old_logprobs and advantages are required");
    if (args->beta != 0 && !args->ref_logprobs)
        return aha_errf(err, AHA_EINVAL, "grpo: ref_logprobs are required when beta != 0");
    if (!(args->eps_low >= 0) || !(args->eps_high >= 0) || !isfinite(args->beta) || !isfinite(args->scale))
        return aha_errf(err, AHA_EINVAL, "grpo: eps, beta and scale must be finite, eps >= 0");
    fwd_args fa;
    AHA_TRY(train_prepare(m, t, b, &fa, err));
    acts *a = &m->a;
    int N = fa.N;
    /* per-row loss inputs: row t of sequence s predicts token t+1 (layout index t - s) */
    for (int s = 0; s < b->n_seqs; s++) {
        int s0 = b->cu_seqlens[s], s1 = b->cu_seqlens[s + 1];
        double cnt = 0;
        for (int r = s0; r + 1 < s1; r++) cnt += args->mask[r - s];
        float wseq = args->norm == AHA_GRPO_NORM_TOKEN ? args->scale
                     : cnt > 0                         ? (float)(args->scale / cnt)
                                                       : 0.0f;
        for (int r = s0; r < s1; r++) {
            bool has = r + 1 < s1;
            float mk = has ? args->mask[r - s] : 0.0f;
            a->h_mask[r] = mk;
            a->h_weight[r] = mk * wseq;
            a->h_old[r] = has ? args->old_logprobs[r - s] : 0.0f;
            a->h_ref[r] = has && args->ref_logprobs ? args->ref_logprobs[r - s] : 0.0f;
            a->h_adv[r] = args->advantages[s];
        }
    }
    bool *keep = (bool *)a->h_lp; /* h_lp is free until the logprobs come back */
    for (int r = 0; r < N; r++) keep[r] = a->h_mask[r] != 0 || a->h_weight[r] != 0;
    float *fa32[5] = {a->h_mask, a->h_weight, a->h_old, a->h_ref, a->h_adv};
    int ns;
    bool sel;
    AHA_TRY(train_select(m, N, keep, fa32, 5, &ns, &sel, err));
    AHA_TRY(upload_f32(m, a->mask, a->h_mask, ns, err));
    AHA_TRY(upload_f32(m, a->weight, a->h_weight, ns, err));
    AHA_TRY(upload_f32(m, a->old, a->h_old, ns, err));
    AHA_TRY(upload_f32(m, a->ref, a->h_ref, ns, err));
    AHA_TRY(upload_f32(m, a->adv, a->h_adv, ns, err));
    AHA_TRY(forward(m, &fa, err));
    AHA_TRY(head_train(m, t, N, ns, sel, LOSS_GRPO, args, err));
    AHA_TRY(backward(m, t, &fa, err));
    float st[AHA_GRPO_NSTATS];
    TRY_OP(OPS(m)->to_host(BE(m), st, a->stats, sizeof st, err));
    if (stats) {
        stats->loss = st[AHA_GRPO_STAT_LOSS];
        stats->kl_sum = st[AHA_GRPO_STAT_KL];
        stats->clipped = st[AHA_GRPO_STAT_CLIPPED];
        stats->ratio_sum = st[AHA_GRPO_STAT_RATIO];
        stats->tokens = st[AHA_GRPO_STAT_TOKENS];
    }
    if (logprobs) {
        float *lpc = a->h_old; /* uploaded already: free */
        TRY_OP(OPS(m)->to_host(BE(m), lpc, a->lp, (size_t)ns * sizeof(float), err));
        memset(a->h_lp, 0, (size_t)N * sizeof(float));
        for (int k = 0; k < ns; k++) a->h_lp[sel ? a->h_sel[k] : k] = lpc[k];
        rows_to_layout(b, a->h_lp, logprobs);
    }
    return AHA_OK;
}

aha_status aha_model_sft_backward(aha_model *m, aha_train *t, const aha_batch *b, const float *loss_mask,
                                  float scale, double *loss, aha_err *err)
{
    if (!loss_mask) return aha_errf(err, AHA_EINVAL, "sft: loss_mask is required");
    if (!isfinite(scale)) return aha_errf(err, AHA_EINVAL, "sft: scale must be finite");
    fwd_args fa;
    AHA_TRY(train_prepare(m, t, b, &fa, err));
    acts *a = &m->a;
    for (int s = 0; s < b->n_seqs; s++)
        for (int r = b->cu_seqlens[s]; r < b->cu_seqlens[s + 1]; r++)
            a->h_weight[r] = r + 1 < b->cu_seqlens[s + 1] ? loss_mask[r - s] * scale : 0.0f;
    bool *keep = (bool *)a->h_lp;
    for (int r = 0; r < fa.N; r++) keep[r] = a->h_weight[r] != 0;
    float *fa32[1] = {a->h_weight};
    int ns;
    bool sel;
    AHA_TRY(train_select(m, fa.N, keep, fa32, 1, &ns, &sel, err));
    AHA_TRY(upload_f32(m, a->weight, a->h_weight, ns, err));
    AHA_TRY(forward(m, &fa, err));
    AHA_TRY(head_train(m, t, fa.N, ns, sel, LOSS_SFT, NULL, err));
    AHA_TRY(backward(m, t, &fa, err));
    float st[2];
    TRY_OP(OPS(m)->to_host(BE(m), st, a->stats, sizeof st, err));
    if (loss) *loss = st[0];
    return AHA_OK;
}

/* ---- train state ------------------------------------------------------------------------- */

aha_status aha_train_create(aha_model *m, aha_train **out, aha_err *err)
{
    *out = NULL;
    if (m->train) return aha_errf(err, AHA_EPRECOND, "model: already has a train state");
    if (aha_tensor_is_none(m->master))
        return aha_errf(err, AHA_EPRECOND,
                        "model: training on a %s backend needs fp32 master weights (open with opts.training)",
                        m->be->device);
    aha_train *t = calloc(1, sizeof *t);
    if (!t) return aha_errf(err, AHA_ENOMEM, "train state: out of memory");
    t->m = m;
    size_t slab = ((size_t)m->numel * sizeof(float) + 255) / 256 * 256;
    aha_status st = OPS(m)->buf_alloc(BE(m), 3 * slab + 256, &t->buf, err);
    if (st != AHA_OK) {
        free(t);
        return aha_err_prefix(err, st, "train state for %lld parameters", (long long)m->numel);
    }
    char *base = OPS(m)->buf_base(t->buf);
    t->g = (aha_tensor){base, AHA_DT_F32};
    t->m1 = (aha_tensor){base + slab, AHA_DT_F32};
    t->m2 = (aha_tensor){base + 2 * slab, AHA_DT_F32};
    t->acc = (aha_tensor){base + 3 * slab, AHA_DT_F32};
    m->train = t;
    *out = t;
    return AHA_OK;
}

void aha_train_free(aha_train *t)
{
    if (!t) return;
    if (t->m) {
        OPS(t->m)->buf_free(BE(t->m), t->buf);
        t->m->train = NULL;
    }
    free(t);
}

aha_status aha_train_zero_grad(aha_train *t, aha_err *err)
{
    return OPS(t->m)->fill(BE(t->m), t->g, t->m->numel, 0.0f, err);
}

aha_tensor aha_train_grads(aha_train *t, int64_t *numel)
{
    if (numel) *numel = t->m->numel;
    return t->g;
}

int aha_train_step_count(const aha_train *t) { return t->step; }

aha_status aha_train_grad_get_f32(aha_train *t, int i, float *dst, aha_err *err)
{
    aha_model *m = t->m;
    if (i < 0 || i >= m->n_params) return aha_errf(err, AHA_EINVAL, "train: parameter %d out of range", i);
    return OPS(m)->to_host(BE(m), dst, G(t, i), (size_t)m->params[i].info.numel * sizeof(float), err);
}

aha_status aha_train_grad_norm(aha_train *t, double *norm, aha_err *err)
{
    aha_model *m = t->m;
    float acc;
    TRY_OP(OPS(m)->fill(BE(m), t->acc, 1, 0.0f, err));
    TRY_OP(OPS(m)->sumsq(BE(m), t->acc, t->g, m->numel, err));
    TRY_OP(OPS(m)->to_host(BE(m), &acc, t->acc, sizeof acc, err));
    *norm = sqrt((double)acc);
    return AHA_OK;
}

aha_status aha_train_clip(aha_train *t, double max_norm, double *norm_before, aha_err *err)
{
    double n;
    AHA_TRY(aha_train_grad_norm(t, &n, err));
    if (norm_before) *norm_before = n;
    double coef = max_norm / (n + 1e-6);
    if (coef < 1.0) TRY_OP(OPS(t->m)->scale(BE(t->m), t->g, t->m->numel, (float)coef, err));
    return AHA_OK;
}

aha_status aha_train_adamw_step(aha_train *t, const aha_adamw_args *a, aha_err *err)
{
    aha_model *m = t->m;
    if (!(a->lr >= 0) || !(a->beta1 >= 0 && a->beta1 < 1) || !(a->beta2 >= 0 && a->beta2 < 1) ||
        !(a->eps > 0) || !(a->weight_decay >= 0))
        return aha_errf(err, AHA_EINVAL, "adamw: need lr >= 0, 0 <= beta < 1, eps > 0, weight_decay >= 0");
    int step = t->step + 1;
    bool separate = m->master.data != m->w.data;
    /* one op call per run of consecutive parameters sharing a weight decay (one call in all
     * unless biases and norms are exempt); runs include the alignment padding, which stays 0 */
    for (int i = 0; i < m->n_params;) {
        bool decay = !(a->no_decay_bias_norm && (m->params[i].kind == P_BIAS || m->params[i].kind == P_NORM));
        int j = i + 1;
        while (j < m->n_params &&
               decay == !(a->no_decay_bias_norm && (m->params[j].kind == P_BIAS || m->params[j].kind == P_NORM)))
            j++;
        int64_t o = m->params[i].off, n = (j < m->n_params ? m->params[j].off : m->numel) - o;
        TRY_OP(OPS(m)->adamw(BE(m), aha_tensor_at(m->master, o), separate ? aha_tensor_at(m->w, o) : aha_tensor_none(),
                             aha_tensor_at(t->g, o), aha_tensor_at(t->m1, o), aha_tensor_at(t->m2, o), n, a->lr,
                             a->beta1, a->beta2, a->eps, decay ? a->weight_decay : 0.0f, 1.0f, step, err));
        i = j;
    }
    t->step = step;
    return AHA_OK;
}

aha_status aha_train_save(aha_train *t, const char *path, aha_err *err)
{
    aha_model *m = t->m;
    bool own_master = m->master.data != m->w.data;
    size_t n = (size_t)m->numel;
    float *host = malloc(n * sizeof(float) * (own_master ? 3 : 2));
    aha_st_writer *w = aha_st_writer_new();
    aha_status st = host && w ? AHA_OK : aha_errf(err, AHA_ENOMEM, "train save: out of memory");
    if (st == AHA_OK) st = OPS(m)->to_host(BE(m), host, t->m1, n * sizeof(float), err);
    if (st == AHA_OK) st = OPS(m)->to_host(BE(m), host + n, t->m2, n * sizeof(float), err);
    if (st == AHA_OK && own_master) st = OPS(m)->to_host(BE(m), host + 2 * n, m->master, n * sizeof(float), err);
    char name[128];
    for (int i = 0; st == AHA_OK && i < m->n_params; i++) {
        const param *p = &m->params[i];
        snprintf(name, sizeof name, "exp_avg.%s", p->name);
        st = aha_st_writer_add(w, name, AHA_DT_F32, p->info.ndim, p->info.shape, host + p->off, err);
        snprintf(name, sizeof name, "exp_avg_sq.%s", p->name);
        if (st == AHA_OK)
            st = aha_st_writer_add(w, name, AHA_DT_F32, p->info.ndim, p->info.shape, host + n + p->off, err);
        snprintf(name, sizeof name, "master.%s", p->name);
        if (st == AHA_OK && own_master)
            st = aha_st_writer_add(w, name, AHA_DT_F32, p->info.ndim, p->info.shape, host + 2 * n + p->off,
                                   err);
    }
    char step[32];
    snprintf(step, sizeof step, "%d", t->step);
    if (st == AHA_OK) st = aha_st_writer_set_metadata(w, "step", step, err);
    if (st == AHA_OK) st = aha_st_writer_save(w, path, err);
    aha_st_writer_free(w);
    free(host);
    return st;
}

aha_status aha_train_load(aha_train *t, const char *path, aha_err *err)
{
    aha_model *m = t->m;
    aha_st_file *f = NULL;
    AHA_TRY(aha_st_open(path, &f, err));
    const char *step = aha_st_metadata(f, "step");
    char *end = NULL;
    long sv = step ? strtol(step, &end, 10) : -1;
    aha_status st = AHA_OK;
    if (!step || *end || sv < 0 || sv > 1000000000)
        st = aha_errf(err, AHA_EFORMAT, "optimizer state %s: missing or bad 'step' metadata", path);
    bool own_master = m->master.data != m->w.data;
    char name[128];
    /* validate everything before touching the state, so a bad file changes nothing */
    for (int pass = 0; pass < 2 && st == AHA_OK; pass++) {
        for (int i = 0; st == AHA_OK && i < m->n_params; i++) {
            const param *p = &m->params[i];
            for (int k = 0; k < (own_master ? 3 : 2) && st == AHA_OK; k++) {
                snprintf(name, sizeof name, "%s.%s", k == 0 ? "exp_avg" : k == 1 ? "exp_avg_sq" : "master",
                         p->name);
                if (pass == 0) {
                    const aha_st_tensor *x = aha_st_find(f, name);
                    bool ok = x && x->ndim == p->info.ndim && x->dtype == AHA_DT_F32;
                    for (int d = 0; ok && d < x->ndim; d++) ok = x->shape[d] == p->info.shape[d];
                    if (!ok)
                        st = aha_errf(err, AHA_EFORMAT, "optimizer state %s: tensor '%s' missing or not F32 %s",
                                      path, name, "of the parameter's shape");
                    continue;
                }
                aha_tensor dst = k == 0 ? t->m1 : k == 1 ? t->m2 : m->master;
                st = OPS(m)->to_device(BE(m), aha_tensor_at(dst, p->off), aha_st_find(f, name)->data,
                                       (size_t)p->info.numel * sizeof(float), err);
            }
        }
    }
    if (st == AHA_OK && own_master) {
        /* the compute weights follow the restored master */
        for (int i = 0; st == AHA_OK && i < m->n_params; i++)
            st = OPS(m)->copy(BE(m), W(m, i), aha_tensor_at(m->master, m->params[i].off),
                              m->params[i].info.numel, err);
    }
    if (st == AHA_OK) t->step = (int)sv;
    aha_st_close(f);
    return st;
}

/* ---- KV cache ------------------------------------------------------------------------- */

size_t aha_kv_cache_bytes(const aha_model_config *cfg, aha_dtype dt, int max_slots, int max_seq_len)
{
    return (size_t)2 * cfg->num_layers * max_slots * max_seq_len * cfg->num_kv_heads * cfg->head_dim *
           aha_dtype_size(dt);
}

aha_status aha_kv_cache_create(aha_model *m, int max_slots, int max_seq_len, aha_kv_cache **out,
                               aha_err *err)
{
    *out = NULL;
    if (max_slots <= 0 || max_seq_len <= 0 || max_slots > 1 << 20 || max_seq_len > 1 << 24)
        return aha_errf(err, AHA_EINVAL, "kv cache: %d slots x %d positions is out of range", max_slots,
                        max_seq_len);
    aha_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return aha_errf(err, AHA_ENOMEM, "kv cache: out of memory");
    c->m = m;
    c->slots = max_slots;
    c->max_seq = max_seq_len;
    c->len = calloc((size_t)max_slots, sizeof *c->len);
    c->slab = (int64_t)max_slots * max_seq_len * m->cfg.num_kv_heads * m->cfg.head_dim;
    aha_status st = c->len ? OPS(m)->buf_alloc(BE(m), aha_kv_cache_bytes(&m->cfg, m->be->act_dtype, max_slots,
                                                                          max_seq_len),
                                               &c->buf, err)
                           : aha_errf(err, AHA_ENOMEM, "kv cache: out of memory");
    if (st != AHA_OK) {
        free(c->len);
        free(c);
        return aha_err_prefix(err, st, "kv cache of %d slots x %d positions", max_slots, max_seq_len);
    }
    c->base = (aha_tensor){OPS(m)->buf_base(c->buf), m->be->act_dtype};
    *out = c;
    return AHA_OK;
}

void aha_kv_cache_free(aha_kv_cache *c)
{
    if (!c) return;
    OPS(c->m)->buf_free(BE(c->m), c->buf);
    free(c->len);
    free(c);
}

int aha_kv_cache_slots(const aha_kv_cache *c) { return c->slots; }
int aha_kv_cache_max_seq(const aha_kv_cache *c) { return c->max_seq; }
int aha_kv_cache_len(const aha_kv_cache *c, int slot)
{
    return slot >= 0 && slot < c->slots ? c->len[slot] : 0;
}
void aha_kv_cache_reset_slot(aha_kv_cache *c, int slot)
{
    if (slot >= 0 && slot < c->slots) c->len[slot] = 0;
}

aha_status aha_kv_cache_copy_prefix(aha_kv_cache *c, int src, int dst, int n, aha_err *err)
{
    if (src < 0 || src >= c->slots || dst < 0 || dst >= c->slots)
        return aha_errf(err, AHA_EINVAL, "kv cache: slot out of range (src %d, dst %d, %d slots)", src, dst,
                        c->slots);
    if (n < 0 || n > c->len[src])
        return aha_errf(err, AHA_EINVAL, "kv cache: prefix of %d tokens but slot %d holds %d", n, src, c->len[src]);
    if (src == dst) {
        c->len[dst] = n;
        return AHA_OK;
    }
    aha_model *m = c->m;
    int64_t row = (int64_t)m->cfg.num_kv_heads * m->cfg.head_dim;
    int64_t so = (int64_t)src * c->max_seq * row, dof = (int64_t)dst * c->max_seq * row;
    if (OPS(m)->copy2d) {
        /* k and v of every layer are 2 * layers segments one slab apart: one call */
        TRY_OP(OPS(m)->copy2d(BE(m), aha_tensor_at(c->base, dof), c->slab, aha_tensor_at(c->base, so), c->slab,
                              n * row, 2 * (int64_t)m->cfg.num_layers, err));
        c->len[dst] = n;
        return AHA_OK;
    }
    for (int l = 0; l < m->cfg.num_layers; l++) {
        TRY_OP(OPS(m)->copy(BE(m), aha_tensor_at(cache_k(c, l), dof), aha_tensor_at(cache_k(c, l), so), n * row,
                            err));
        TRY_OP(OPS(m)->copy(BE(m), aha_tensor_at(cache_v(c, l), dof), aha_tensor_at(cache_v(c, l), so), n * row,
                            err));
    }
    c->len[dst] = n;
    return AHA_OK;
}

aha_status aha_model_prefill(aha_model *m, aha_kv_cache *c, int slot, const int32_t *ids, int n,
                             float *logits_last, aha_err *err)
{
    if (c->m != m) return aha_errf(err, AHA_EINVAL, "prefill: cache belongs to another model");
    if (slot < 0 || slot >= c->slots) return aha_errf(err, AHA_EINVAL, "prefill: slot %d out of range", slot);
    if (n <= 0) return aha_errf(err, AHA_EINVAL, "prefill: no tokens");
    int L0 = c->len[slot];
    if (n > c->max_seq - L0)
        return aha_errf(err, AHA_ELIMIT, "prefill: slot %d holds %d tokens; %d more exceed max_seq_len %d", slot,
                        L0, n, c->max_seq);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return aha_errf(err, AHA_EINVAL, "prefill: token %d has id %d outside the vocabulary", i, ids[i]);
    AHA_TRY(acts_ensure(m, n, false, err));
    acts *a = &m->a;
    for (int i = 0; i < n; i++) {
        a->h_pos[i] = L0 + i;
        a->h_slots[i] = slot;
        a->h_lens[i] = L0 + i + 1;
    }
    int32_t cu[2] = {0, n};
    aha_backend *be = BE(m);
    TRY_OP(OPS(m)->to_device(be, a->ids, ids, (size_t)n * 4, err));
    TRY_OP(OPS(m)->to_device(be, a->pos, a->h_pos, (size_t)n * 4, err));
    TRY_OP(OPS(m)->to_device(be, a->slots, a->h_slots, (size_t)n * 4, err));
    TRY_OP(OPS(m)->to_device(be, a->lens, a->h_lens, (size_t)n * 4, err));
    TRY_OP(OPS(m)->to_device(be, a->cu, cu, sizeof cu, err));
    /* an empty slot attends only within the new tokens: the packed kernel does that */
    fwd_args fa = {.N = n, .n_seqs = 1, .max_seqlen = n, .mode = L0 == 0 ? ATT_PACKED : ATT_CACHED, .cache = c};
    AHA_TRY(forward(m, &fa, err));
    if (logits_last) {
        AHA_TRY(logits_rows(m, n - 1, 1, err));
        AHA_TRY(logits_to_host(m, 1, logits_last, err));
    }
    c->len[slot] = L0 + n;
    return AHA_OK;
}

/* The shared part of decode and decode_sample: checks and the uploads of one new token per
 * slot (ids, positions, slots, lengths). */
/* Checks a decode step's slots and tokens and uploads ids, pos, slots, lens (and, for
 * decode_sample, the rng ids into cu): one copy of the staged span when rng_ids is given (the
 * targets inside it are junk there: sample overwrites them), each array alone otherwise. */
static aha_status decode_prep(aha_model *m, aha_kv_cache *c, int n_active, const int *slots,
                              const int32_t *tokens, const int32_t *rng_ids, aha_err *err)
{
    if (c->m != m) return aha_errf(err, AHA_EINVAL, "decode: cache belongs to another model");
    if (n_active <= 0 || n_active > c->slots)
        return aha_errf(err, AHA_EINVAL, "decode: %d active slots (cache has %d)", n_active, c->slots);
    AHA_TRY(acts_ensure(m, n_active, false, err));
    acts *a = &m->a;
    /* duplicates found with one mark per cache slot (the pairwise scan cost ~30 us a step at
     * 256 slots) */
    unsigned char *seen = calloc((size_t)c->slots, 1);
    if (!seen) return aha_errf(err, AHA_ENOMEM, "decode: out of memory");
    aha_status st = AHA_OK;
    for (int i = 0; i < n_active && st == AHA_OK; i++) {
        int s = slots[i];
        if (s < 0 || s >= c->slots) st = aha_errf(err, AHA_EINVAL, "decode: slot %d out of range", s);
        else if (c->len[s] >= c->max_seq)
            st = aha_errf(err, AHA_ELIMIT, "decode: slot %d is full (%d tokens)", s, c->max_seq);
        else if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            st = aha_errf(err, AHA_EINVAL, "decode: token id %d outside the vocabulary", tokens[i]);
        else if (seen[s]++)
            st = aha_errf(err, AHA_EINVAL, "decode: slot %d appears twice", s);
        else {
            a->h_slots[i] = s;
            a->h_pos[i] = c->len[s];
            a->h_lens[i] = c->len[s] + 1;
        }
    }
    free(seen);
    AHA_TRY(st);
    aha_backend *be = BE(m);
    size_t nb = (size_t)n_active * 4;
    if (rng_ids) {
        memcpy(a->h_idx, tokens, nb);
        memcpy(a->h_idx + idx_off(a, a->pos), a->h_pos, nb);
        memcpy(a->h_idx + idx_off(a, a->cu), rng_ids, nb);
        memcpy(a->h_idx + idx_off(a, a->slots), a->h_slots, nb);
        memcpy(a->h_idx + idx_off(a, a->lens), a->h_lens, nb);
        TRY_OP(OPS(m)->to_device(be, a->ids, a->h_idx, idx_span(a, n_active), err));
        return AHA_OK;
    }
    TRY_OP(OPS(m)->to_device(be, a->ids, tokens, nb, err));
    TRY_OP(OPS(m)->to_device(be, a->pos, a->h_pos, nb, err));
    TRY_OP(OPS(m)->to_device(be, a->slots, a->h_slots, nb, err));
    TRY_OP(OPS(m)->to_device(be, a->lens, a->h_lens, nb, err));
    return AHA_OK;
}

static aha_status decode_forward(aha_model *m, aha_kv_cache *c, int n_active, aha_err *err)
{
    fwd_args fa = {.N = n_active, .n_seqs = n_active, .max_seqlen = 1, .mode = ATT_CACHED, .cache = c};
    return forward(m, &fa, err);
}

aha_status aha_model_decode(aha_model *m, aha_kv_cache *c, int n_active, const int *slots,
                            const int32_t *tokens, float *logits, aha_err *err)
{
    AHA_TRY(decode_prep(m, c, n_active, slots, tokens, NULL, err));
    AHA_TRY(decode_forward(m, c, n_active, err));
    acts *a = &m->a;
    for (int r0 = 0; r0 < n_active; r0 += a->chunk) {
        int n = n_active - r0 < a->chunk ? n_active - r0 : a->chunk;
        AHA_TRY(logits_rows(m, r0, n, err));
        AHA_TRY(logits_to_host(m, n, logits + (size_t)r0 * m->cfg.vocab_size, err));
    }
    for (int i = 0; i < n_active; i++) c->len[slots[i]]++;
    return AHA_OK;
}

aha_status aha_model_decode_sample(aha_model *m, aha_kv_cache *c, int n_active, const int *slots,
                                   const int32_t *tokens, const aha_sampling *sp, uint64_t seed,
                                   const int32_t *rng_ids, int32_t *tokens_out, float *logprobs_out,
                                   aha_err *err)
{
    AHA_TRY(aha_sampling_check(sp, err));
    acts *a = &m->a;
    int V = m->cfg.vocab_size;
    /* a.targets, a.lp and a.cu are free during decode: they carry the draws and rng ids (cu is
     * uploaded with the step's other indices); a.pos holds each slot's position */
    AHA_TRY(decode_prep(m, c, n_active, slots, tokens, OPS(m)->sample ? rng_ids : NULL, err));
    if (OPS(m)->sample) {
        /* Everything below reads only device data uploaded above, so on a backend with op
         * graphs it is recorded once per configuration and replayed: the key holds every
         * argument the ops see (buffers, sizes, sampling parameters). */
        uint32_t tb, pb;
        memcpy(&tb, &sp->temperature, 4);
        memcpy(&pb, &sp->top_p, 4);
        uint64_t key = aha_mix64((uint64_t)(uintptr_t)a->buf, ((uint64_t)(unsigned)a->cap << 1) | a->train);
        key = aha_mix64(key, (uint64_t)(uintptr_t)c->buf);
        key = aha_mix64(key, ((uint64_t)(unsigned)c->slots << 32) | (unsigned)c->max_seq);
        key = aha_mix64(key, ((uint64_t)(unsigned)n_active << 32) | (unsigned)a->chunk);
        key = aha_mix64(key, ((uint64_t)tb << 32) | pb);
        key = aha_mix64(key, aha_mix64(seed, (uint64_t)(unsigned)sp->top_k)) | 1;
        bool found = false;
        if (OPS(m)->graph_launch) TRY_OP(OPS(m)->graph_launch(BE(m), key, &found, err));
        for (int attempt = 0; !found && attempt < 2; attempt++) {
            bool rec = attempt == 0 && OPS(m)->graph_begin && OPS(m)->graph_begin(BE(m), NULL) == AHA_OK;
            aha_status st = decode_forward(m, c, n_active, err);
            for (int r0 = 0; st == AHA_OK && r0 < n_active; r0 += a->chunk) {
                int n = n_active - r0 < a->chunk ? n_active - r0 : a->chunk;
                st = logits_rows(m, r0, n, err);
                if (st == AHA_OK)
                    st = OPS(m)->sample(BE(m), aha_tensor_at(a->targets, r0), aha_tensor_at(a->lp, r0), a->logits,
                                        aha_tensor_at(a->cu, r0), aha_tensor_at(a->pos, r0), n, V, sp->temperature,
                                        sp->top_k, sp->top_p, seed, err);
            }
            if (!rec) {
                AHA_TRY(st);
                break;
            }
            /* a recording that failed is dropped and the step runs op by op instead */
            if (st == AHA_OK) st = OPS(m)->graph_end(BE(m), key, err);
            else OPS(m)->graph_end(BE(m), 0, NULL);
            if (st == AHA_OK) TRY_OP(OPS(m)->graph_launch(BE(m), key, &found, err));
        }
        TRY_OP(OPS(m)->to_host(BE(m), tokens_out, a->targets, (size_t)n_active * 4, err));
        TRY_OP(OPS(m)->to_host(BE(m), logprobs_out, a->lp, (size_t)n_active * sizeof(float), err));
    } else {
        float *row = malloc((size_t)V * sizeof(float));
        void *work = malloc(aha_sample_work_bytes(V));
        aha_status st = row && work ? AHA_OK : aha_errf(err, AHA_ENOMEM, "decode_sample: host scratch");
        st = decode_forward(m, c, n_active, err);
        for (int i = 0; st == AHA_OK && i < n_active; i++) {
            st = logits_rows(m, i, 1, err);
            if (st == AHA_OK) st = logits_to_host(m, 1, row, err);
            if (st != AHA_OK) break;
            aha_rng rng;
            aha_rng_seed(&rng, aha_mix64(seed, (uint64_t)(uint32_t)rng_ids[i]), (uint64_t)a->h_pos[i]);
            tokens_out[i] = aha_sample_token(row, V, sp, &rng, work, &logprobs_out[i]);
        }
        free(row);
        free(work);
        AHA_TRY(st);
    }
    for (int i = 0; i < n_active; i++) c->len[slots[i]]++;
    return AHA_OK;
}
