/* shape.c — shape rules, one per op (named in ops.def), and shape helpers. A rule sees the node with its
 * inputs and attributes, and either fills the output shape and dtype or writes a message saying what
 * was expected. Only dimension 0 may be the batch dimension N. */
#include "ir/ir.h"
#include <stdarg.h>
#include <string.h>

typedef bool (*shape_rule)(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen);

gr_shape gr_shape_make(int rank, const int64_t *dims) {
  GR_ASSERT(rank >= 0 && rank <= GR_MAX_RANK);
  gr_shape s = {.rank = rank};
  for (int i = 0; i < rank; i++) s.dim[i] = dims[i];
  return s;
}

bool gr_shape_eq(const gr_shape *a, const gr_shape *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dim[i] != b->dim[i]) return false;
  return true;
}

bool gr_shape_has_batch(const gr_shape *s) { return s->rank > 0 && s->dim[0] == GR_BATCH; }

int64_t gr_shape_inner(const gr_shape *s) {
  int64_t n = 1;
  for (int i = gr_shape_has_batch(s) ? 1 : 0; i < s->rank; i++) n *= s->dim[i];
  return n;
}

int64_t gr_shape_numel(const gr_shape *s, int64_t batch) {
  return gr_shape_inner(s) * (gr_shape_has_batch(s) ? batch : 1);
}

char *gr_shape_str(const gr_shape *s, char *buf, size_t n) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, n - k, "[");
  for (int i = 0; i < s->rank && k < n; i++) {
    if (s->dim[i] == GR_BATCH)
      k += (size_t)snprintf(buf + k, n - k, "%sN", i ? ", " : "");
    else
      k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)s->dim[i]);
  }
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

#define SHAPE(v) gr_shape_str(&(v)->shape, (char[96]){0}, 96)

static bool fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return false;
}

static bool need_float(const gr_node *n, int i, char *err, size_t errlen) {
  gr_dtype t = n->in[i]->dtype;
  if (t == GR_F32 || t == GR_F64) return true;
  return fail(err, errlen, "%s: input %d must be floating point, got %s", gr_ops[n->op].name, i + 1, gr_dtype_name[t]);
}

static bool shape_leaf(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  (void)n; (void)out; (void)dt; (void)err; (void)errlen;
  return true; /* leaves are made with their shape */
}

static bool shape_same(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!need_float(n, 0, err, errlen)) return false;
  *out = n->in[0]->shape;
  *dt = n->in[0]->dtype;
  return true;
}

static bool shape_same2(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!need_float(n, 0, err, errlen) || !need_float(n, 1, err, errlen)) return false;
  if (!gr_shape_eq(&n->in[0]->shape, &n->in[1]->shape) || n->in[0]->dtype != n->in[1]->dtype)
    return fail(err, errlen, "%s: operands differ in shape: %s and %s", gr_ops[n->op].name, SHAPE(n->in[0]), SHAPE(n->in[1]));
  *out = n->in[0]->shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* softmax-like ops: over the last dimension of [N, ..., C] */
static bool shape_rows(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!need_float(n, 0, err, errlen)) return false;
  if (n->in[0]->shape.rank < 2 || !gr_shape_has_batch(&n->in[0]->shape))
    return fail(err, errlen, "%s works over the last dimension of [N, ..., C], got %s", gr_ops[n->op].name, SHAPE(n->in[0]));
  *out = n->in[0]->shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* C = op(A) op(B), both rank 2; op is transposition when the attribute says so. */
static bool shape_matmul(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *a = n->in[0], *b = n->in[1];
  if (!need_float(n, 0, err, errlen) || !need_float(n, 1, err, errlen)) return false;
  if (a->shape.rank != 2 || b->shape.rank != 2)
    return fail(err, errlen, "matmul needs rank-2 operands, got %s and %s", SHAPE(a), SHAPE(b));
  int64_t m = a->shape.dim[n->a.trans_a ? 1 : 0], ka = a->shape.dim[n->a.trans_a ? 0 : 1];
  int64_t kb = b->shape.dim[n->a.trans_b ? 1 : 0], nn = b->shape.dim[n->a.trans_b ? 0 : 1];
  if (ka != kb)
    return fail(err, errlen, "matmul: inner dimensions differ: %s%s x %s%s", SHAPE(a), n->a.trans_a ? "^T" : "",
                SHAPE(b), n->a.trans_b ? "^T" : "");
  if (nn == GR_BATCH) return fail(err, errlen, "matmul: the batch dimension can only be the first of the result");
  *out = gr_shape_make(2, (int64_t[]){m, nn});
  *dt = a->dtype;
  return true;
}

/* x [N, C, ...] + b [C], broadcast over the batch and any trailing (spatial) dimensions */
static bool shape_bias_add(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *x = n->in[0], *b = n->in[1];
  if (!need_float(n, 0, err, errlen) || !need_float(n, 1, err, errlen)) return false;
  if (b->shape.rank != 1 || x->shape.rank < 2 || x->shape.dim[1] != b->shape.dim[0] || !gr_shape_has_batch(&x->shape))
    return fail(err, errlen, "bias_add: bias %s does not fit input %s (it adds along dimension 1)", SHAPE(b), SHAPE(x));
  *out = x->shape;
  *dt = x->dtype;
  return true;
}

gr_conv_geom gr_conv_geometry(const gr_shape *x, const gr_shape *w, const gr_attrs *a) {
  gr_conv_geom g = {.cin = x->dim[1], .h = x->dim[2], .w = x->dim[3], .cout = w->dim[0], .kh = w->dim[2], .kw = w->dim[3],
                    .sh = a->stride[0], .sw = a->stride[1], .ph = a->pad[0], .pw = a->pad[1], .dh = a->dilation[0],
                    .dw = a->dilation[1], .groups = a->groups};
  /* floor((H + 2p - d(k-1) - 1) / s) + 1, and 0 when the kernel does not fit (C division truncates) */
  int64_t rh = g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1, rw = g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1;
  g.ho = g.sh > 0 && rh >= 0 ? rh / g.sh + 1 : 0;
  g.wo = g.sw > 0 && rw >= 0 ? rw / g.sw + 1 : 0;
  return g;
}

static bool check_conv(const gr_shape *x, const gr_shape *w, const gr_attrs *a, gr_conv_geom *g, char *err, size_t errlen) {
  char xb[96], wb[96];
  gr_shape_str(x, xb, sizeof xb);
  gr_shape_str(w, wb, sizeof wb);
  if (x->rank != 4 || !gr_shape_has_batch(x)) return fail(err, errlen, "conv2d needs input [N, C, H, W], got %s", xb);
  if (w->rank != 4 || gr_shape_has_batch(w)) return fail(err, errlen, "conv2d needs a weight [out, in/groups, kh, kw], got %s", wb);
  if (a->groups < 1 || a->stride[0] < 1 || a->stride[1] < 1 || a->dilation[0] < 1 || a->dilation[1] < 1 || a->pad[0] < 0 || a->pad[1] < 0)
    return fail(err, errlen, "conv2d: stride, dilation and groups must be positive and padding non-negative");
  *g = gr_conv_geometry(x, w, a);
  if (g->cin % g->groups || g->cout % g->groups)
    return fail(err, errlen, "conv2d: %lld input and %lld output channels must both divide into %lld groups", (long long)g->cin,
                (long long)g->cout, (long long)g->groups);
  if (w->dim[1] * g->groups != g->cin)
    return fail(err, errlen, "conv2d: weight %s takes %lld input channels per group, the input %s has %lld in %lld group(s)", wb,
                (long long)w->dim[1], xb, (long long)g->cin, (long long)g->groups);
  if (g->ho < 1 || g->wo < 1)
    return fail(err, errlen, "conv2d: a %lldx%lld kernel (dilation %lldx%lld, padding %lldx%lld) does not fit the %lldx%lld input %s",
                (long long)g->kh, (long long)g->kw, (long long)g->dh, (long long)g->dw, (long long)g->ph, (long long)g->pw,
                (long long)g->h, (long long)g->w, xb);
  return true;
}

/* x [N, C, H, W] * w [Co, C/groups, kh, kw] -> [N, Co, Ho, Wo] */
static bool shape_conv2d(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  gr_conv_geom g;
  if (!need_float(n, 0, err, errlen) || !check_conv(&n->in[0]->shape, &n->in[1]->shape, &n->a, &g, err, errlen)) return false;
  *out = gr_shape_make(4, (int64_t[]){GR_BATCH, g.cout, g.ho, g.wo});
  *dt = n->in[0]->dtype;
  return true;
}

/* A frozen batchnorm folded into the convolution before it: (x, w, gamma, beta, running_mean,
 * running_var), the four of [Co] -> conv2d's [N, Co, Ho, Wo] */
static bool shape_conv2d_bn(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!shape_conv2d(n, out, dt, err, errlen)) return false;
  gr_shape c = gr_shape_make(1, (int64_t[]){out->dim[1]});
  for (int i = 2; i < 6; i++)
    if (!gr_shape_eq(&n->in[i]->shape, &c)) return fail(err, errlen, "conv2d_bn: operand %d is %s, expected [%lld]", i + 1, SHAPE(n->in[i]), (long long)c.dim[0]);
  return true;
}

/* (dy [N, Co, Ho, Wo], w) -> dx of shape attrs.shape, the forward input's */
static bool shape_conv2d_grad_input(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  gr_conv_geom g;
  if (!check_conv(&n->a.shape, &n->in[1]->shape, &n->a, &g, err, errlen)) return false;
  gr_shape y = gr_shape_make(4, (int64_t[]){GR_BATCH, g.cout, g.ho, g.wo});
  if (!gr_shape_eq(&y, &n->in[0]->shape)) return fail(err, errlen, "conv2d_grad_input: dy is %s, expected %s", SHAPE(n->in[0]), gr_shape_str(&y, (char[96]){0}, 96));
  *out = n->a.shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* (x, dy) -> dw of shape attrs.shape, the weight's */
static bool shape_conv2d_grad_weight(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  gr_conv_geom g;
  if (!check_conv(&n->in[0]->shape, &n->a.shape, &n->a, &g, err, errlen)) return false;
  gr_shape y = gr_shape_make(4, (int64_t[]){GR_BATCH, g.cout, g.ho, g.wo});
  if (!gr_shape_eq(&y, &n->in[1]->shape)) return fail(err, errlen, "conv2d_grad_weight: dy is %s, expected %s", SHAPE(n->in[1]), gr_shape_str(&y, (char[96]){0}, 96));
  *out = n->a.shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* x [N, C, H, W] -> [N, C, Ho, Wo] for a kernel x kernel window */
static bool shape_pool2d(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *x = n->in[0];
  const gr_attrs *a = &n->a;
  if (!need_float(n, 0, err, errlen)) return false;
  if (x->shape.rank != 4 || !gr_shape_has_batch(&x->shape))
    return fail(err, errlen, "%s needs input [N, C, H, W], got %s", gr_ops[n->op].name, SHAPE(x));
  if (a->kernel[0] < 1 || a->kernel[1] < 1 || a->stride[0] < 1 || a->stride[1] < 1 || a->pad[0] < 0 || a->pad[1] < 0)
    return fail(err, errlen, "%s: kernel and stride must be positive and padding non-negative", gr_ops[n->op].name);
  if (2 * a->pad[0] > a->kernel[0] || 2 * a->pad[1] > a->kernel[1])
    return fail(err, errlen, "%s: padding must be at most half the kernel size", gr_ops[n->op].name);
  int64_t ho = (x->shape.dim[2] + 2 * a->pad[0] - a->kernel[0]) / a->stride[0] + 1;
  int64_t wo = (x->shape.dim[3] + 2 * a->pad[1] - a->kernel[1]) / a->stride[1] + 1;
  if (x->shape.dim[2] + 2 * a->pad[0] < a->kernel[0] || x->shape.dim[3] + 2 * a->pad[1] < a->kernel[1])
    return fail(err, errlen, "%s: a %lldx%lld window does not fit the input %s", gr_ops[n->op].name, (long long)a->kernel[0],
                (long long)a->kernel[1], SHAPE(x));
  *out = gr_shape_make(4, (int64_t[]){GR_BATCH, x->shape.dim[1], ho, wo});
  *dt = x->dtype;
  return true;
}

/* (x, dy) -> dx of x's shape; dy must have the pooled shape */
static bool shape_pool2d_grad(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!shape_pool2d(n, out, dt, err, errlen)) return false;
  if (!gr_shape_eq(out, &n->in[1]->shape))
    return fail(err, errlen, "%s: dy is %s, expected %s", gr_ops[n->op].name, SHAPE(n->in[1]), gr_shape_str(out, (char[96]){0}, 96));
  *out = n->in[0]->shape;
  return true;
}

/* a [N, .., Ca, ..], b [N, .., Cb, ..] -> [N, .., Ca + Cb, ..] along axis (>= 1); the rest equal */
static bool shape_concat(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *a = n->in[0], *b = n->in[1];
  int ax = n->a.axis;
  if (!need_float(n, 0, err, errlen) || !need_float(n, 1, err, errlen)) return false;
  if (a->shape.rank != b->shape.rank || ax < 1 || ax >= a->shape.rank || !gr_shape_has_batch(&a->shape))
    return fail(err, errlen, "concat along dimension %d does not fit %s and %s", ax, SHAPE(a), SHAPE(b));
  for (int i = 0; i < a->shape.rank; i++)
    if (i != ax && a->shape.dim[i] != b->shape.dim[i])
      return fail(err, errlen, "concat along dimension %d needs the other dimensions equal: %s and %s", ax, SHAPE(a), SHAPE(b));
  *out = a->shape;
  out->dim[ax] += b->shape.dim[ax];
  *dt = a->dtype;
  return true;
}

/* x [N, .., C, ..] -> [N, .., len, ..]: elements start .. start+len-1 along axis */
static bool shape_slice(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *x = n->in[0];
  int ax = n->a.axis;
  if (ax < 1 || ax >= x->shape.rank || n->a.start < 0 || n->a.len < 1 || n->a.start + n->a.len > x->shape.dim[ax])
    return fail(err, errlen, "slice [%lld, %lld) along dimension %d does not fit %s", (long long)n->a.start,
                (long long)(n->a.start + n->a.len), ax, SHAPE(x));
  *out = x->shape;
  out->dim[ax] = n->a.len;
  *dt = x->dtype;
  return true;
}

/* Checks that inputs first..last are per-channel vectors [C] for x [N, C, ...]. */
static bool per_channel(const gr_node *n, const gr_value *x, int first, int last, char *err, size_t errlen) {
  if (x->shape.rank < 2 || !gr_shape_has_batch(&x->shape))
    return fail(err, errlen, "%s needs input [N, C, ...], got %s", gr_ops[n->op].name, SHAPE(x));
  for (int i = first; i <= last; i++)
    if (n->in[i]->shape.rank != 1 || n->in[i]->shape.dim[0] != x->shape.dim[1])
      return fail(err, errlen, "%s: operand %d has shape %s, expected [%lld] for input %s", gr_ops[n->op].name, i + 1,
                  SHAPE(n->in[i]), (long long)x->shape.dim[1], SHAPE(x));
  return true;
}

/* (x [N, C, ...], gamma, beta, running_mean, running_var [C], num_batches_tracked []) -> [N, C, ...] */
static bool shape_batchnorm(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!need_float(n, 0, err, errlen) || !per_channel(n, n->in[0], 1, 4, err, errlen)) return false;
  if (n->in[5]->shape.rank != 0) return fail(err, errlen, "batchnorm: num_batches_tracked must be a scalar");
  *out = n->in[0]->shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* (x, gamma, running_var, dy) -> dx */
static bool shape_bn_grad_input(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!per_channel(n, n->in[0], 1, 2, err, errlen)) return false;
  if (!gr_shape_eq(&n->in[0]->shape, &n->in[3]->shape)) return fail(err, errlen, "batchnorm_grad_input: dy differs from x");
  *out = n->in[0]->shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* (x, dy, running_mean, running_var) -> dgamma [C] */
static bool shape_bn_grad_gamma(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!per_channel(n, n->in[0], 2, 3, err, errlen)) return false;
  if (!gr_shape_eq(&n->in[0]->shape, &n->in[1]->shape)) return fail(err, errlen, "batchnorm_grad_gamma: dy differs from x");
  *out = gr_shape_make(1, (int64_t[]){n->in[0]->shape.dim[1]});
  *dt = n->in[0]->dtype;
  return true;
}

/* (x [N, ..., D...], gamma, beta [D...]) -> x's shape: gamma's shape is the trailing dimensions of x
 * (PyTorch's normalized_shape); each sample's last numel(gamma) values are normalised together */
static bool check_trailing(const gr_node *n, const gr_value *x, const gr_value *p, char *err, size_t errlen) {
  int k = p->shape.rank, r = x->shape.rank;
  bool ok = gr_shape_has_batch(&x->shape) && k >= 1 && k < r;
  for (int i = 0; ok && i < k; i++) ok = p->shape.dim[i] == x->shape.dim[r - k + i];
  return ok || fail(err, errlen, "%s: %s is not the trailing dimensions of input %s", gr_ops[n->op].name, SHAPE(p), SHAPE(x));
}

static bool shape_layernorm(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  for (int i = 0; i < 3; i++)
    if (!need_float(n, i, err, errlen)) return false;
  if (!check_trailing(n, n->in[0], n->in[1], err, errlen)) return false;
  if (!gr_shape_eq(&n->in[1]->shape, &n->in[2]->shape))
    return fail(err, errlen, "layernorm: weight %s and bias %s differ", SHAPE(n->in[1]), SHAPE(n->in[2]));
  *out = n->in[0]->shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* (x, gamma, dy) -> dx */
static bool shape_ln_grad_input(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!check_trailing(n, n->in[0], n->in[1], err, errlen)) return false;
  if (!gr_shape_eq(&n->in[0]->shape, &n->in[2]->shape)) return fail(err, errlen, "layernorm_grad_input: dy differs from x");
  *out = n->in[0]->shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* (x, dy) -> dgamma, of the shape in the attributes */
static bool shape_ln_grad_gamma(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  gr_value p = {.shape = n->a.shape};
  if (!check_trailing(n, n->in[0], &p, err, errlen)) return false;
  if (!gr_shape_eq(&n->in[0]->shape, &n->in[1]->shape)) return fail(err, errlen, "layernorm_grad_gamma: dy differs from x");
  *out = n->a.shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* x [N, ..., D...] -> [D...] (the attributes' shape): the sum over every leading dimension */
static bool shape_sum_rows(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  gr_value p = {.shape = n->a.shape};
  if (!need_float(n, 0, err, errlen) || !check_trailing(n, n->in[0], &p, err, errlen)) return false;
  *out = n->a.shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* (ids i32 [N, ...], table [V, D]) -> [N, ..., D] */
static bool shape_embedding(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *ids = n->in[0], *w = n->in[1];
  if (ids->dtype != GR_I32 || !gr_shape_has_batch(&ids->shape))
    return fail(err, errlen, "embedding needs integer indices [N, ...], got %s %s", gr_dtype_name[ids->dtype], SHAPE(ids));
  if (!need_float(n, 1, err, errlen)) return false;
  if (w->shape.rank != 2) return fail(err, errlen, "embedding: the table must be [num_embeddings, dim], got %s", SHAPE(w));
  if (ids->shape.rank >= GR_MAX_RANK) return fail(err, errlen, "embedding: input %s has too many dimensions", SHAPE(ids));
  if (n->a.has_pad && (n->a.pad_idx < 0 || n->a.pad_idx >= w->shape.dim[0]))
    return fail(err, errlen, "embedding: padding index %lld is outside the table's %lld rows", (long long)n->a.pad_idx,
                (long long)w->shape.dim[0]);
  *out = ids->shape;
  out->dim[out->rank++] = w->shape.dim[1];
  *dt = w->dtype;
  return true;
}

/* (ids, dy [N, ..., D]) -> dtable, of the shape in the attributes */
static bool shape_embedding_grad(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *ids = n->in[0], *dy = n->in[1];
  gr_shape want = ids->shape;
  want.dim[want.rank++] = n->a.shape.dim[1];
  if (ids->dtype != GR_I32 || n->a.shape.rank != 2 || !gr_shape_eq(&want, &dy->shape))
    return fail(err, errlen, "embedding_grad: dy %s does not fit indices %s", SHAPE(dy), SHAPE(ids));
  *out = n->a.shape;
  *dt = dy->dtype;
  return true;
}

/* x [N, ...] -> x without dimension `axis` (>= 1): the mean along it */
static bool shape_mean(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *x = n->in[0];
  int ax = n->a.axis;
  if (!need_float(n, 0, err, errlen)) return false;
  if (!gr_shape_has_batch(&x->shape) || ax < 1 || ax >= x->shape.rank)
    return fail(err, errlen, "mean over dimension %d does not fit %s (dimension 0 is the batch)", ax, SHAPE(x));
  *out = x->shape;
  for (int i = ax; i + 1 < out->rank; i++) out->dim[i] = out->dim[i + 1];
  out->rank--;
  *dt = x->dtype;
  return true;
}

/* dy -> dx of the shape in the attributes (dy with dimension `axis` put back) */
static bool shape_mean_grad(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  gr_node fwd = *n;
  gr_value x = {.shape = n->a.shape, .dtype = n->in[0]->dtype};
  fwd.in[0] = &x;
  fwd.op = GR_OP_MEAN;
  gr_shape y;
  if (!shape_mean(&fwd, &y, dt, err, errlen)) return false;
  if (!gr_shape_eq(&y, &n->in[0]->shape)) return fail(err, errlen, "mean_grad: dy %s does not fit %s", SHAPE(n->in[0]), SHAPE(&x));
  *out = n->a.shape;
  return true;
}

/* (prediction, target) of one shape [N, ...] -> the mean loss over all elements [] */
static bool shape_target_loss(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *x = n->in[0], *t = n->in[1];
  if (!need_float(n, 0, err, errlen)) return false;
  if (!gr_shape_has_batch(&x->shape) || x->shape.rank < 2)
    return fail(err, errlen, "%s needs predictions of shape [N, ...], got %s", gr_ops[n->op].name, SHAPE(x));
  if (t->dtype != x->dtype || !gr_shape_eq(&x->shape, &t->shape))
    return fail(err, errlen, "%s needs targets of the predictions' shape %s, got %s %s", gr_ops[n->op].name, SHAPE(x),
                gr_dtype_name[t->dtype], SHAPE(t));
  out->rank = 0;
  *dt = x->dtype;
  return true;
}

/* (prediction, target, dloss []) -> dprediction */
static bool shape_target_loss_grad(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!shape_target_loss(n, out, dt, err, errlen)) return false;
  if (n->in[2]->shape.rank != 0) return fail(err, errlen, "%s: the loss gradient must be a scalar", gr_ops[n->op].name);
  *out = n->in[0]->shape;
  return true;
}

int64_t gr_scratch_elems(const gr_node *n, int64_t max_batch) {
  gr_conv_geom g;
  switch (n->op) {
  case GR_OP_CONV2D:
  case GR_OP_CONV2D_BN: g = gr_conv_geometry(&n->in[0]->shape, &n->in[1]->shape, &n->a); break;
  case GR_OP_CONV2D_GRAD_INPUT: g = gr_conv_geometry(&n->a.shape, &n->in[1]->shape, &n->a); break;
  case GR_OP_CONV2D_GRAD_WEIGHT: g = gr_conv_geometry(&n->in[0]->shape, &n->a.shape, &n->a); break;
  default: return 0;
  }
  /* forward: the output staging t [Cout, chunk*HoWo] (B is packed from x); input gradient: the
   * columns [Cin*kh*kw, chunk*HoWo] (B is packed from dy); weight gradient: both */
  int64_t ch = gr_conv_chunk(&g), cols = g.ho * g.wo * (ch < max_batch ? ch : max_batch), K = g.cin * g.kh * g.kw;
  if (n->op == GR_OP_CONV2D || n->op == GR_OP_CONV2D_BN) return g.cout * cols;
  return (n->op == GR_OP_CONV2D_GRAD_INPUT ? K : K + g.cout) * cols;
}

int64_t gr_conv_chunk(const gr_conv_geom *g) {
  int64_t per = (g->cin * g->kh * g->kw + g->cout) * g->ho * g->wo;
  return per > 0 && GR_CONV_STAGING / per > 1 ? GR_CONV_STAGING / per : 1;
}

bool gr_pool_tiles(const gr_attrs *a) {
  return a->stride[0] == a->kernel[0] && a->stride[1] == a->kernel[1] && a->pad[0] == 0 && a->pad[1] == 0 &&
         a->kernel[0] * a->kernel[1] <= 16;
}

static bool shape_reshape(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *x = n->in[0];
  const gr_shape *t = &n->a.shape;
  if (gr_shape_has_batch(&x->shape) != gr_shape_has_batch(t))
    return fail(err, errlen, "reshape must keep the batch dimension first: %s to %s", SHAPE(x), gr_shape_str(t, (char[96]){0}, 96));
  for (int i = gr_shape_has_batch(t) ? 1 : 0; i < t->rank; i++)
    if (t->dim[i] <= 0) return fail(err, errlen, "reshape: dimension %d of the target must be positive", i);
  if (gr_shape_inner(&x->shape) != gr_shape_inner(t))
    return fail(err, errlen, "cannot reshape %s (%lld elements per sample) to %s (%lld)", SHAPE(x),
                (long long)gr_shape_inner(&x->shape), gr_shape_str(t, (char[96]){0}, 96), (long long)gr_shape_inner(t));
  *out = *t;
  *dt = x->dtype;
  return true;
}

/* dy [N, C, ...] -> [C]: the sum over every dimension but 1 (bias_add's gradient) */
static bool shape_bias_grad(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *x = n->in[0];
  if (!need_float(n, 0, err, errlen)) return false;
  if (!gr_shape_has_batch(&x->shape) || x->shape.rank < 2) return fail(err, errlen, "bias_grad needs [N, C, ...], got %s", SHAPE(x));
  *out = gr_shape_make(1, (int64_t[]){x->shape.dim[1]});
  *dt = x->dtype;
  return true;
}

/* logits [N, C], labels i32 [N] -> mean loss [] */
static bool shape_softmax_ce(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *x = n->in[0], *y = n->in[1];
  if (!need_float(n, 0, err, errlen)) return false;
  if (x->shape.rank != 2 || !gr_shape_has_batch(&x->shape))
    return fail(err, errlen, "cross-entropy needs logits of shape [N, classes], got %s", SHAPE(x));
  if (y->dtype != GR_I32 || y->shape.rank != 1 || !gr_shape_has_batch(&y->shape))
    return fail(err, errlen, "cross-entropy needs integer class labels of shape [N], got %s %s", gr_dtype_name[y->dtype], SHAPE(y));
  out->rank = 0;
  *dt = x->dtype;
  return true;
}

/* logits [N, C], labels [N], dloss [] -> dlogits [N, C] */
static bool shape_softmax_ce_grad(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!shape_softmax_ce(n, out, dt, err, errlen)) return false;
  if (n->in[2]->shape.rank != 0) return fail(err, errlen, "softmax_cross_entropy_grad: the loss gradient must be a scalar");
  *out = n->in[0]->shape;
  return true;
}

/* gradient clipping: a tensor's sum of squares (a scalar); the clipping coefficient of a scalar sum;
 * a tensor times a scalar */
static bool shape_sumsq(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!need_float(n, 0, err, errlen)) return false;
  if (gr_shape_has_batch(&n->in[0]->shape)) return fail(err, errlen, "sum_squares takes a tensor without a batch dimension, got %s", SHAPE(n->in[0]));
  out->rank = 0;
  *dt = n->in[0]->dtype;
  return true;
}

static bool shape_scalar1(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!need_float(n, 0, err, errlen)) return false;
  if (n->in[0]->shape.rank != 0) return fail(err, errlen, "%s takes a scalar, got %s", gr_ops[n->op].name, SHAPE(n->in[0]));
  out->rank = 0;
  *dt = n->in[0]->dtype;
  return true;
}

static bool shape_scale(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  if (!need_float(n, 0, err, errlen)) return false;
  if (gr_shape_has_batch(&n->in[0]->shape) || n->in[1]->shape.rank != 0)
    return fail(err, errlen, "scale takes a tensor without a batch dimension and a scalar, got %s and %s", SHAPE(n->in[0]), SHAPE(n->in[1]));
  *out = n->in[0]->shape;
  *dt = n->in[0]->dtype;
  return true;
}

/* (param, grad, state...) of one shape; no output */
static bool shape_update(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  for (int i = 1; i < n->n_in; i++)
    if (!gr_shape_eq(&n->in[0]->shape, &n->in[i]->shape))
      return fail(err, errlen, "%s: operand %d has shape %s, the parameter %s", gr_ops[n->op].name, i + 1,
                  SHAPE(n->in[i]), SHAPE(n->in[0]));
  out->rank = 0;
  *dt = n->in[0]->dtype;
  return true;
}

static const shape_rule rules[GR_OP_COUNT] = {
#define OP(id, name, arity, kclass, flags, shape, grad, emit) [GR_OP_##id] = shape,
#include "ir/ops.def"
#undef OP
};

bool gr_infer_shape(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  *dt = GR_F32;
  return rules[n->op](n, out, dt, err, errlen);
}
