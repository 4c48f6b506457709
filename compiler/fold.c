/* fold.c — folds each frozen batchnorm into the convolution before it.
 *
 * Requires: the forward graph (and evaluation twin) after freeze.c, before the loss and autodiff.
 * Guarantees: a batchnorm that uses its running statistics (training = 0) and reads the output of a
 * bias-free conv2d that nothing else reads, where the convolution's weight and the batchnorm's weight
 * and bias are all frozen and no batchnorm in training mode moves the same running statistics, is
 * rewritten in place into one conv2d_bn node: the convolution whose output copy applies batchnorm's
 * per-channel affine map (gamma / sqrt(var + eps), beta - mean gamma / sqrt(var + eps)). The
 * batchnorm pass over the activations is gone, and so is the convolution's separate output (the old
 * conv2d node is left unused, so no program computes it). The parameters themselves are untouched:
 * checkpoints, later phases and unfreezing see the original tensors. Nothing that trains is folded,
 * as its map would change every step. */
#include "compiler/compiler.h"
#include <string.h>

int gr_fold_batchnorm(gr_graph *g) {
  int *uses = gr_alloc(g->arena, sizeof(int) * (size_t)(g->n_values + 1));
  bool *moving = gr_alloc(g->arena, (size_t)(g->n_values + 1)); /* running statistics a training batchnorm updates */
  for (int i = 0; i < g->n_nodes; i++) {
    const gr_node *n = g->nodes[i];
    for (int k = 0; k < n->n_in; k++) uses[n->in[k]->id]++;
    if (n->op == GR_OP_BATCHNORM && n->a.training) moving[n->in[3]->id] = moving[n->in[4]->id] = true;
  }
  int folded = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    gr_node *bn = g->nodes[i];
    if (bn->op != GR_OP_BATCHNORM || bn->a.training) continue;
    const gr_value *y = bn->in[0];
    gr_node *conv = y->def;
    if (!conv || conv->op != GR_OP_CONV2D || uses[y->id] != 1) continue;
    gr_value *w = conv->in[1], *gamma = bn->in[1], *beta = bn->in[2], *mean = bn->in[3], *var = bn->in[4];
    if (w->trainable || gamma->trainable || beta->trainable || moving[mean->id] || moving[var->id]) continue;
    gr_attrs a = conv->a;
    a.bn_eps = bn->a.bn_eps;
    bn->op = GR_OP_CONV2D_BN;
    bn->in[0] = conv->in[0];
    bn->in[1] = w;
    bn->in[2] = gamma;
    bn->in[3] = beta;
    bn->in[4] = mean;
    bn->in[5] = var;
    bn->n_in = 6;
    bn->a = a;
    bn->layer = gr_sprintf(g->arena, "%s+%s", conv->layer ? conv->layer : "?", bn->layer ? bn->layer : "?");
    gr_shape s;
    gr_dtype dt;
    char err[256];
    GR_CHECK(gr_infer_shape(bn, &s, &dt, err, sizeof err) && gr_shape_eq(&s, &bn->out->shape), "folding %s: %s", bn->layer, err);
    uses[y->id] = 0;
    folded++;
  }
  return folded;
}
