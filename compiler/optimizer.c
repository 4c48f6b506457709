/* optimizer.c — appends the optimizer's update nodes.
 *
 * Requires: autodiff has run. Guarantees: one update node per trainable parameter that has a gradient
 * (frozen parameters get neither an update nor state), each with its state values (role STATE, in the
 * persistent slab, zero at start, named as in PyTorch's optimizer state: momentum_buffer, exp_avg,
 * exp_avg_sq). The learning rate and the step number are run-time scalars (GR_SCALAR_LR,
 * GR_SCALAR_STEP), so schedules never recompile. Updates follow torch.optim exactly:
 *   SGD:   g = grad + wd p;  v = mu v + g;  g = nesterov ? g + mu v : v;  p -= lr g
 *   Adam:  g = grad + wd p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *          p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *   AdamW: p *= 1 - lr wd, then Adam with g = grad
 * With clip_grad_norm > 0, every gradient is first scaled by min(1, clip / (||g||_2 + 1e-6)), the
 * norm taken over all trainable parameters' gradients together (torch.nn.utils.clip_grad_norm_). */
#include "compiler/compiler.h"

/* The clipping coefficient of all trainable gradients (NULL without clipping or gradients). */
static gr_value *clip_coefficient(gr_graph *g, const gr_opt_cfg *cfg, int n0) {
  if (cfg->clip_grad_norm <= 0) return NULL;
  gr_value *total = NULL;
  for (int i = 0; i < n0; i++) {
    gr_value *p = g->nodes[i]->out;
    if (!p || g->nodes[i]->op != GR_OP_PARAM || !p->trainable || !p->grad) continue;
    gr_value *sq = gr_unary(g, GR_OP_SUMSQ, p->grad, g->nodes[i]->loc);
    total = total ? gr_binary(g, GR_OP_ADD, total, sq, g->nodes[i]->loc) : sq;
  }
  gr_attrs a = {.max_norm = cfg->clip_grad_norm};
  return total ? gr_apply(g, GR_OP_CLIP_COEF, &total, 1, &a, (gr_loc){0}) : NULL;
}

void gr_add_optimizer(gr_graph *g, const gr_opt_cfg *cfg) {
  int n0 = g->n_nodes;
  bool was = g->in_backward;
  g->in_backward = true; /* clipping works on gradients */
  gr_value *coef = clip_coefficient(g, cfg, n0);
  g->in_backward = was;
  gr_attrs a = {.momentum = cfg->momentum, .weight_decay = cfg->weight_decay, .nesterov = cfg->nesterov,
                .beta1 = cfg->beta1, .beta2 = cfg->beta2, .eps = cfg->eps, .decoupled = cfg->kind == GR_OPT_ADAMW,
                .lr_slot = GR_SCALAR_LR, .step_slot = GR_SCALAR_STEP};
  for (int i = 0; i < n0; i++) {
    gr_value *p = g->nodes[i]->out;
    if (!p || g->nodes[i]->op != GR_OP_PARAM || !p->trainable || !p->grad) continue;
    g->layer = g->nodes[i]->layer;
    /* a parameter first trained in a later phase counts Adam's steps from that phase's start */
    a.step_slot = p->phase > 0 ? GR_SCALAR_PHASE_STEP + p->phase - 1 : GR_SCALAR_STEP;
    if (p->group > 0) { /* a parameter group: its own learning-rate slot and weight decay */
      GR_CHECK(p->group <= cfg->n_groups, "parameter %s in group %d of %d", p->name, p->group, cfg->n_groups);
      a.lr_slot = GR_SCALAR_COUNT + p->group - 1;
      a.weight_decay = (float)(cfg->weight_decay * cfg->groups[p->group - 1].wd_mult);
    } else {
      a.lr_slot = GR_SCALAR_LR;
      a.weight_decay = cfg->weight_decay;
    }
    gr_value *grad = p->grad;
    if (coef) {
      g->in_backward = true;
      grad = gr_binary(g, GR_OP_SCALE, p->grad, coef, g->nodes[i]->loc);
      g->in_backward = was;
    }
    if (cfg->kind == GR_OPT_ADAM || cfg->kind == GR_OPT_ADAMW) {
      gr_value *m = gr_state(g, gr_sprintf(g->arena, "%s.exp_avg", p->name), p->shape);
      gr_value *v = gr_state(g, gr_sprintf(g->arena, "%s.exp_avg_sq", p->name), p->shape);
      gr_value *in[4] = {p, grad, m, v};
      gr_apply_update(g, GR_OP_ADAM_UPDATE, in, 4, &a, g->nodes[i]->loc);
    } else if (cfg->momentum > 0) {
      gr_value *v = gr_state(g, gr_sprintf(g->arena, "%s.momentum_buffer", p->name), p->shape);
      gr_value *in[3] = {p, grad, v};
      gr_apply_update(g, GR_OP_SGD_MOMENTUM_UPDATE, in, 3, &a, g->nodes[i]->loc);
    } else {
      gr_value *in[2] = {p, grad};
      gr_apply_update(g, GR_OP_SGD_UPDATE, in, 2, &a, g->nodes[i]->loc);
    }
  }
  g->layer = NULL;
}
