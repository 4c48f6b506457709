/* optimizer.c — appends the optimizer's update nodes.
 *
 * Requires: autodiff has run. Guarantees: one update node per trainable parameter that has a gradient
 * (frozen parameters get neither an update nor state), each with its state values (role STATE, in the
 * persistent slab, zero at start). The learning rate is a run-time scalar (GR_SCALAR_LR) so schedules
 * never recompile. Updates follow torch.optim.SGD:
 *   g = grad + wd * p;  v = mu * v + g;  g = nesterov ? g + mu * v : v;  p -= lr * g */
#include "compiler/compiler.h"

void gr_add_optimizer(gr_graph *g, const gr_opt_cfg *cfg) {
  GR_CHECK(cfg->kind == GR_OPT_SGD, "optimizer %d not implemented", (int)cfg->kind);
  int n0 = g->n_nodes;
  gr_attrs a = {.momentum = cfg->momentum, .weight_decay = cfg->weight_decay, .nesterov = cfg->nesterov,
                .lr_slot = GR_SCALAR_LR};
  for (int i = 0; i < n0; i++) {
    gr_value *p = g->nodes[i]->out;
    if (!p || g->nodes[i]->op != GR_OP_PARAM || !p->trainable || !p->grad) continue;
    g->layer = g->nodes[i]->layer;
    if (cfg->momentum > 0) {
      gr_value *v = gr_state(g, gr_sprintf(g->arena, "%s.momentum_buffer", p->name), p->shape);
      gr_value *in[3] = {p, p->grad, v};
      gr_apply_update(g, GR_OP_SGD_MOMENTUM_UPDATE, in, 3, &a, g->nodes[i]->loc);
    } else {
      gr_value *in[2] = {p, p->grad};
      gr_apply_update(g, GR_OP_SGD_UPDATE, in, 2, &a, g->nodes[i]->loc);
    }
  }
  g->layer = NULL;
}
