/* autodiff.c — reverse-mode differentiation as an IR-to-IR pass.
 *
 * Requires: a forward graph whose loss value y is reachable from the parameters.
 * Guarantees: v->grad is set for exactly the values on a path from a trainable parameter to y; the
 * backward nodes are ordinary IR appended after the forward ones, built with the same builders, so
 * later passes (memory planning, codegen, fusion) treat them like any other node. Nothing is built
 * for frozen parameters or for inputs: freezing is a flag plus reachability, never a special case.
 * Gradients of a value used more than once are summed with `add` nodes.
 *
 * Each rule receives the node, the gradient dy of its output and which inputs need a gradient. */
#include "compiler/compiler.h"
#include <string.h>

typedef void (*grad_rule)(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx);

/* C = op_a(A) op_b(B):
 *   dA = dC op_b(B)^T        (A^T used: dA = op_b(B) dC^T)
 *   dB = op_a(A)^T dC        (B^T used: dB = dC^T op_a(A)) */
static void grad_matmul(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  gr_value *a = n->in[0], *b = n->in[1];
  int ta = n->a.trans_a, tb = n->a.trans_b;
  if (needs[0]) dx[0] = ta ? gr_matmul(g, b, dy, tb, 1, n->loc) : gr_matmul(g, dy, b, 0, !tb, n->loc);
  if (needs[1]) dx[1] = tb ? gr_matmul(g, dy, a, 1, ta, n->loc) : gr_matmul(g, a, dy, !ta, 0, n->loc);
}

/* y[n, c, ...] = x[n, c, ...] + b[c]:  dx = dy,  db[c] = sum over n and ... of dy[n, c, ...] */
static void grad_bias_add(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = dy;
  if (needs[1]) dx[1] = gr_unary(g, GR_OP_BIAS_GRAD, dy, n->loc);
}

/* y = conv2d(x, w):  dx = conv2d_grad_input(dy, w)   (col2im of w^T dy, per sample and group)
 *                    dw = conv2d_grad_weight(x, dy)  (sum over samples of dy im2col(x)^T) */
static void grad_conv2d(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  gr_attrs a = n->a;
  if (needs[0]) {
    a.shape = n->in[0]->shape;
    gr_value *in[2] = {dy, n->in[1]};
    dx[0] = gr_apply(g, GR_OP_CONV2D_GRAD_INPUT, in, 2, &a, n->loc);
  }
  if (needs[1]) {
    a.shape = n->in[1]->shape;
    gr_value *in[2] = {n->in[0], dy};
    dx[1] = gr_apply(g, GR_OP_CONV2D_GRAD_WEIGHT, in, 2, &a, n->loc);
  }
}

/* y = conv2d(x, w) alpha + shift, a frozen batchnorm (alpha = gamma / sqrt(running_var + eps))
 * folded in: only x can need a gradient, the folded parameters being frozen;
 * dx = conv2d_grad_input(dy alpha, w), dy alpha as batchnorm_grad_input makes it on running statistics */
static void grad_conv2d_bn(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  GR_CHECK(!needs[1] && !needs[2] && !needs[3], "conv2d_bn of trainable parameters");
  if (!needs[0]) return;
  gr_attrs a = n->a;
  a.training = 0;
  gr_value *in[4] = {dy, n->in[2], n->in[5], dy}; /* on running statistics the first operand is not read */
  gr_value *in2[2] = {gr_apply(g, GR_OP_BATCHNORM_GRAD_INPUT, in, 4, &a, n->loc), n->in[1]};
  a.shape = n->in[0]->shape;
  dx[0] = gr_apply(g, GR_OP_CONV2D_GRAD_INPUT, in2, 2, &a, n->loc);
}

/* y = gamma * xhat + beta, xhat = (x - mean) / sqrt(var + eps), per channel over N and spatial
 * (M values); mean/var are the batch's (training) or the running statistics:
 *   training:  dx = gamma / (M sqrt(var + eps)) * (M dy - sum dy - xhat sum(dy xhat))
 *   running:   dx = gamma / sqrt(var + eps) * dy
 *   dgamma = sum dy xhat,  dbeta = sum dy;  running statistics get no gradient */
static void grad_batchnorm(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) {
    gr_value *in[4] = {n->in[0], n->in[1], n->in[4], dy};
    dx[0] = gr_apply(g, GR_OP_BATCHNORM_GRAD_INPUT, in, 4, &n->a, n->loc);
  }
  if (needs[1]) {
    gr_value *in[4] = {n->in[0], dy, n->in[3], n->in[4]};
    dx[1] = gr_apply(g, GR_OP_BATCHNORM_GRAD_GAMMA, in, 4, &n->a, n->loc);
  }
  if (needs[2]) dx[2] = gr_unary(g, GR_OP_BIAS_GRAD, dy, n->loc);
}

/* y = avgpool(x), the window sum over kh kw (padding counted, as PyTorch's default):
 * dx[i] = sum over the windows containing i of dy / (kh kw) */
static void grad_avgpool2d(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  gr_value *in[2] = {n->in[0], dy};
  if (needs[0]) dx[0] = gr_apply(g, GR_OP_AVGPOOL2D_GRAD, in, 2, &n->a, n->loc);
}

/* y = maxpool(x):  dx[i] = sum of dy over the windows whose (first) maximum is x[i] */
static void grad_maxpool2d(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  gr_value *in[2] = {n->in[0], dy};
  if (needs[0]) dx[0] = gr_apply(g, GR_OP_MAXPOOL2D_GRAD, in, 2, &n->a, n->loc);
}

/* y = x forward (a view), gradient reversal (Ganin & Lempitsky 2015):  dx = -lambda dy, lambda the
 * step's run-time scalar (scalars[GR_SCALAR_LAMBDA]), so a schedule changes it without recompiling */
static void grad_grad_reverse(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = gr_unary(g, GR_OP_GRAD_REVERSE_GRAD, dy, n->loc);
}

/* y = a + b:  da = dy,  db = dy */
static void grad_add(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  (void)g; (void)n;
  if (needs[0]) dx[0] = dy;
  if (needs[1]) dx[1] = dy;
}

/* y = x * mask / (1 - p), the mask a function of (step seed, salt, element):  dx = dy * mask / (1 - p),
 * which is the same dropout applied to dy */
static void grad_dropout(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = gr_apply(g, GR_OP_DROPOUT, &dy, 1, &n->a, n->loc);
}

/* y = a * b:  da = dy * b,  db = dy * a */
static void grad_mul(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = gr_binary(g, GR_OP_MUL, dy, n->in[1], n->loc);
  if (needs[1]) dx[1] = gr_binary(g, GR_OP_MUL, dy, n->in[0], n->loc);
}

/* y = x Phi(x) (PyTorch's exact GELU, Phi the normal CDF):  dx = dy (Phi(x) + x phi(x)) */
static void grad_gelu(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = gr_binary(g, GR_OP_GELU_GRAD, n->in[0], dy, n->loc);
}

/* y = softmax(x) over the last dimension:  dx = y (dy - sum(dy y)) */
static void grad_softmax(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = gr_binary(g, GR_OP_SOFTMAX_GRAD, n->out, dy, n->loc);
}

/* y = x - logsumexp(x) over the last dimension:  dx = dy - exp(y) sum(dy) */
static void grad_log_softmax(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = gr_binary(g, GR_OP_LOG_SOFTMAX_GRAD, n->out, dy, n->loc);
}

/* y = max(x, 0):  dx = dy * [y > 0] */
static void grad_relu(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = gr_binary(g, GR_OP_RELU_GRAD, n->out, dy, n->loc);
}

/* y = 1 / (1 + e^-x):  dx = dy * y * (1 - y) */
static void grad_sigmoid(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = gr_binary(g, GR_OP_SIGMOID_GRAD, n->out, dy, n->loc);
}

/* y = tanh x:  dx = dy * (1 - y^2) */
static void grad_tanh(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = gr_binary(g, GR_OP_TANH_GRAD, n->out, dy, n->loc);
}

/* y = concat(a, b) along axis:  da = dy[.., :Ca, ..],  db = dy[.., Ca:, ..] */
static void grad_concat(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  int64_t ca = n->in[0]->shape.dim[n->a.axis];
  gr_attrs a = {.axis = n->a.axis, .start = 0, .len = ca};
  if (needs[0]) dx[0] = gr_apply(g, GR_OP_SLICE, &dy, 1, &a, n->loc);
  a.start = ca;
  a.len = n->in[1]->shape.dim[n->a.axis];
  if (needs[1]) dx[1] = gr_apply(g, GR_OP_SLICE, &dy, 1, &a, n->loc);
}

/* y = reshape(x):  dx = reshape(dy) to x's shape */
static void grad_reshape(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  if (needs[0]) dx[0] = gr_reshape(g, dy, n->in[0]->shape, n->loc);
}

/* L = mean_r [ (1-e) (lse(x_r) - x_r[t_r]) + e (lse(x_r) - mean_j x_r[j]) ]  (e: label smoothing)
 *   dx_r = dL * (softmax(x_r) - (1-e) onehot(t_r) - e/C) / N */
static void grad_softmax_ce(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  gr_value *in[3] = {n->in[0], n->in[1], dy};
  if (needs[0]) dx[0] = gr_apply(g, GR_OP_SOFTMAX_CE_GRAD, in, 3, &n->a, n->loc);
}

/* y = gamma * xhat + beta, xhat = (x - mean) / sqrt(var + eps) over each sample's trailing D values:
 *   dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy gamma (means over the D values)
 *   dgamma = sum over rows of dy xhat,  dbeta = sum over rows of dy */
static void grad_layernorm(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  gr_attrs a = n->a;
  a.shape = n->in[1]->shape;
  if (needs[0]) dx[0] = gr_apply(g, GR_OP_LAYERNORM_GRAD_INPUT, (gr_value *[]){n->in[0], n->in[1], dy}, 3, &a, n->loc);
  if (needs[1]) dx[1] = gr_apply(g, GR_OP_LAYERNORM_GRAD_GAMMA, (gr_value *[]){n->in[0], dy}, 2, &a, n->loc);
  if (needs[2]) dx[2] = gr_apply(g, GR_OP_SUM_ROWS, &dy, 1, &a, n->loc);
}

/* y[i, :] = table[ids[i], :]:  dtable[v, :] = sum of dy[i, :] over the i with ids[i] = v (none for the
 * padding row); the indices get no gradient */
static void grad_embedding(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  gr_attrs a = n->a;
  a.shape = n->in[1]->shape;
  if (needs[1]) dx[1] = gr_apply(g, GR_OP_EMBEDDING_GRAD, (gr_value *[]){n->in[0], dy}, 2, &a, n->loc);
}

/* y = mean of x along axis (length T):  dx = dy broadcast along axis / T */
static void grad_mean(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  gr_attrs a = n->a;
  a.shape = n->in[0]->shape;
  if (needs[0]) dx[0] = gr_apply(g, GR_OP_MEAN_GRAD, &dy, 1, &a, n->loc);
}

/* Losses against float targets t, means over all M elements:
 *   bce_with_logits  L = mean(max(x, 0) - x t + log(1 + e^-|x|)):  dx = dL (sigmoid(x) - t) / M
 *   mse              L = mean((x - t)^2):                          dx = dL 2 (x - t) / M
 * The targets get no gradient. */
static void grad_target_loss(gr_graph *g, const gr_node *n, gr_value *dy, const bool *needs, gr_value **dx) {
  gr_op op = n->op == GR_OP_MSE ? GR_OP_MSE_GRAD : GR_OP_BCE_LOGITS_GRAD;
  if (needs[0]) dx[0] = gr_apply(g, op, (gr_value *[]){n->in[0], n->in[1], dy}, 3, &n->a, n->loc);
}

static const grad_rule rules[GR_OP_COUNT] = {
#define OP(id, name, arity, kclass, flags, shape, grad, emit) [GR_OP_##id] = grad,
#include "ir/ops.def"
#undef OP
};

bool gr_autodiff(gr_graph *g, gr_value *y, gr_value *dy) {
  GR_CHECK(gr_shape_eq(&y->shape, &dy->shape), "autodiff: seed gradient has the wrong shape");
  int n0 = g->n_nodes, nv = g->n_values;
  /* forward: which values depend on a trainable parameter */
  bool *dep = gr_alloc(g->arena, (size_t)nv);
  for (int i = 0; i < n0; i++) {
    gr_node *n = g->nodes[i];
    if (!n->out) continue;
    if (n->op == GR_OP_PARAM || n->op == GR_OP_INPUT) { /* an input may ask for a gradient (tests) */
      dep[n->out->id] = n->out->trainable;
      continue;
    }
    if (!rules[n->op]) continue;
    for (int k = 0; k < n->n_in; k++)
      if (dep[n->in[k]->id]) dep[n->out->id] = true;
  }
  /* backward: which of those reach y */
  bool *reach = gr_alloc(g->arena, (size_t)nv);
  reach[y->id] = true;
  for (int i = n0 - 1; i >= 0; i--) {
    gr_node *n = g->nodes[i];
    if (!n->out || !reach[n->out->id]) continue;
    for (int k = 0; k < n->n_in; k++) reach[n->in[k]->id] = true;
  }
  gr_value **grad = gr_alloc(g->arena, sizeof(gr_value *) * (size_t)nv);
  grad[y->id] = dy;
  bool was = g->in_backward;
  const char *layer = g->layer;
  g->in_backward = true;
  int errors0 = g->diag->n_errors;
  for (int i = n0 - 1; i >= 0; i--) {
    gr_node *n = g->nodes[i];
    if (!n->out || !grad[n->out->id] || !rules[n->op]) continue;
    bool needs[GR_MAX_IN] = {0}, any = false;
    for (int k = 0; k < n->n_in; k++) any |= needs[k] = dep[n->in[k]->id] && reach[n->in[k]->id];
    if (!any) continue;
    gr_value *dx[GR_MAX_IN] = {0};
    g->layer = n->layer;
    rules[n->op](g, n, grad[n->out->id], needs, dx);
    for (int k = 0; k < n->n_in; k++) {
      if (!needs[k]) continue;
      GR_CHECK(dx[k] != NULL || g->diag->n_errors > errors0, "gradient rule of %s gave no gradient for input %d", gr_ops[n->op].name, k);
      if (!dx[k]) continue;
      int id = n->in[k]->id;
      grad[id] = grad[id] ? gr_binary(g, GR_OP_ADD, grad[id], dx[k], n->loc) : dx[k];
    }
  }
  g->in_backward = was;
  g->layer = layer;
  for (int i = 0; i < nv; i++)
    if (grad[i] && g->values[i] != y) g->values[i]->grad = grad[i];
  return g->diag->n_errors == errors0;
}
