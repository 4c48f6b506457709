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

/* x [.., C] + b [C] */
static bool shape_bias_add(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *x = n->in[0], *b = n->in[1];
  if (!need_float(n, 0, err, errlen) || !need_float(n, 1, err, errlen)) return false;
  if (b->shape.rank != 1 || x->shape.rank < 1 || gr_shape_inner(&x->shape) != b->shape.dim[0] ||
      !gr_shape_has_batch(&x->shape))
    return fail(err, errlen, "bias_add: bias %s does not fit input %s", SHAPE(b), SHAPE(x));
  *out = x->shape;
  *dt = x->dtype;
  return true;
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

/* [N, ...] -> [...] */
static bool shape_sum_rows(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen) {
  const gr_value *x = n->in[0];
  if (!need_float(n, 0, err, errlen)) return false;
  if (!gr_shape_has_batch(&x->shape)) return fail(err, errlen, "sum_rows needs a batch dimension, got %s", SHAPE(x));
  out->rank = x->shape.rank - 1;
  for (int i = 1; i < x->shape.rank; i++) out->dim[i - 1] = x->shape.dim[i];
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
