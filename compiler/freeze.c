/* freeze.c — the transfer-learning pass: the plan's freeze/unfreeze patterns, batchnorm policy and
 * parameter groups applied to the forward graph.
 *
 * Requires: the model's forward graph (and evaluation twin), before the loss and autodiff.
 * Guarantees: a frozen parameter has trainable = false, so autodiff builds no gradient for it (nor
 * for anything that only it needs), the optimizer gives it no update and no state, and memory
 * planning keeps nothing alive for its backward pass; a batchnorm layer in `frozen` mode uses and
 * keeps its running statistics in training (training = 0); in `adapt` mode its weight and bias are
 * frozen. Every trainable parameter in a parameter group has v->group = index + 1.
 * Every pattern must match something, and no name may get two different settings from two groups
 * or batchnorm rules: each problem is an error at the pattern's place in the plan. */
#include "compiler/compiler.h"
#include <stdio.h>
#include <string.h>

/* An example name from the model, for messages: the first trainable parameter's. */
static const char *example_name(const gr_graph *g) {
  for (int i = 0; i < g->n_values; i++)
    if (g->values[i]->role == GR_ROLE_PARAM && !g->values[i]->buffer) return g->values[i]->name;
  return "?";
}

static bool is_weight(const gr_value *v) { return v->role == GR_ROLE_PARAM && !v->buffer; }
static bool any_param(const gr_value *v) { return v->role == GR_ROLE_PARAM; }
static bool trainable_weight(const gr_value *v) { return is_weight(v) && v->trainable; }
static bool frozen_weight(const gr_value *v) { return is_weight(v) && !v->trainable; }

/* Every pattern of `pats` must match a parameter that `accept` takes; each that matches none is an
 * error: "<key> pattern 'p' matches no <qualifier>parameter of the model (...)". */
static bool all_match(const gr_graph *g, const gr_patterns *pats, bool (*accept)(const gr_value *), const char *key,
                      const char *qualifier, gr_diag *d) {
  bool ok = true;
  for (int k = 0; k < pats->n; k++) {
    bool hit = false;
    for (int i = 0; i < g->n_values && !hit; i++) hit = accept(g->values[i]) && gr_glob_match(pats->v[k].glob, g->values[i]->name);
    if (!hit) {
      gr_error(d, pats->v[k].loc, "%s pattern '%s' matches no %sparameter of the model (parameters are named like '%s')", key,
               pats->v[k].glob, qualifier, example_name(g));
      ok = false;
    }
  }
  return ok;
}

/* Sets trainable on every parameter a pattern of `pats` matches (among those with trainable ==
 * from; made trainable, its phase becomes `phase`); a pattern that matches none of them is an error. */
static bool mark(gr_graph *g, const gr_patterns *pats, bool from, const char *key, int phase, gr_diag *d) {
  if (!all_match(g, pats, from ? trainable_weight : frozen_weight, key, from ? "" : "frozen ", d)) return false;
  for (int i = 0; i < g->n_values; i++) {
    gr_value *v = g->values[i];
    for (int k = 0; is_weight(v) && v->trainable == from && k < pats->n; k++)
      if (gr_glob_match(pats->v[k].glob, v->name)) {
        v->trainable = !from;
        v->phase = phase;
        if (!from) v->unfrozen_at = pats->v[k].loc;
      }
  }
  return true;
}

/* The first pattern of `pats` that matches name, or NULL. */
static const gr_pattern *matching(const gr_patterns *pats, const char *name) {
  for (int k = 0; k < pats->n; k++)
    if (gr_glob_match(pats->v[k].glob, name)) return &pats->v[k];
  return NULL;
}

/* Each batchnorm layer's mode from the rules (two rules with different modes for one layer: an
 * error); then the mode applied. Only the training graph's batchnorm nodes (training = 1) change. */
static bool apply_batchnorm(gr_graph *g, const gr_transfer *t, gr_diag *d) {
  bool ok = true;
  const char *example = NULL; /* a batchnorm layer's name, for messages */
  for (int r = 0; r < t->n_bn; r++) /* every pattern must match a batchnorm layer */
    for (int k = 0; k < t->bn[r].match.n; k++) {
      bool hit = false;
      for (int i = 0; i < g->n_nodes && !hit; i++) {
        const gr_node *n = g->nodes[i];
        if (n->op != GR_OP_BATCHNORM || !n->a.training) continue;
        example = n->layer;
        hit = gr_glob_match(t->bn[r].match.v[k].glob, n->layer ? n->layer : "");
      }
      if (hit) continue;
      if (example)
        gr_error(d, t->bn[r].match.v[k].loc, "batchnorm pattern '%s' matches no batchnorm layer of the model (they are named like '%s')",
                 t->bn[r].match.v[k].glob, example);
      else
        gr_error(d, t->bn[r].match.v[k].loc, "the plan sets a batchnorm mode, but the model has no batchnorm layer");
      ok = false;
    }
  if (!ok) return false;
  for (int i = 0; i < g->n_nodes; i++) {
    gr_node *n = g->nodes[i];
    if (n->op != GR_OP_BATCHNORM || !n->a.training) continue;
    const char *layer = n->layer ? n->layer : "";
    gr_bn_mode mode = GR_BN_AUTO;
    const gr_pattern *first = NULL;
    for (int r = 0; r < t->n_bn; r++) {
      const gr_pattern *p = matching(&t->bn[r].match, layer);
      if (!p) continue;
      if (first && t->bn[r].mode != mode) {
        gr_error(d, p->loc, "batchnorm layer '%s' is matched by rules with different modes: '%s' here, '%s' before", layer,
                 gr_bn_mode_names[t->bn[r].mode], gr_bn_mode_names[mode]);
        gr_note(d, first->loc, "the first rule matching it");
        ok = false;
      }
      if (!first) {
        first = p;
        mode = t->bn[r].mode;
      }
    }
    gr_value *gamma = n->in[1], *beta = n->in[2];
    if (mode == GR_BN_ADAPT && (gamma->unfrozen_at.file || beta->unfrozen_at.file)) { /* adapt freezes what was unfrozen */
      gr_error(d, gamma->unfrozen_at.file ? gamma->unfrozen_at : beta->unfrozen_at,
               "this unfreeze pattern makes batchnorm layer '%s' trainable, but its batchnorm mode 'adapt' freezes its weight and bias",
               layer);
      gr_note(d, first->loc, "the batchnorm rule that puts it in adapt mode");
      ok = false;
    }
    if (mode == GR_BN_ADAPT) gamma->trainable = beta->trainable = false;
    if (mode == GR_BN_FROZEN || (mode == GR_BN_AUTO && !gamma->trainable && !beta->trainable)) n->a.training = 0;
  }
  return ok;
}

/* v->group for every parameter a group matches; a parameter in two groups of different settings is
 * an error; a group (or one of its patterns) matching nothing is an error; one that matches only
 * frozen parameters, a warning. */
static bool apply_groups(gr_graph *g, const gr_transfer *t, gr_diag *d) {
  bool ok = true;
  for (int k = 0; k < t->n_groups; k++) {
    const gr_param_group *grp = &t->groups[k];
    if (!all_match(g, &grp->match, is_weight, "parameter group", "", d)) {
      ok = false;
      continue;
    }
    int trained = 0; /* now or in a later phase */
    for (int i = 0; i < g->n_values; i++) {
      const gr_value *v = g->values[i];
      trained += is_weight(v) && (v->trainable || v->phase > 0) && matching(&grp->match, v->name);
    }
    if (!trained) gr_warning(d, grp->loc, "this parameter group matches only frozen parameters; its settings have no effect");
  }
  for (int i = 0; ok && i < g->n_values; i++) {
    gr_value *v = g->values[i];
    if (!is_weight(v)) continue;
    for (int k = 0; k < t->n_groups; k++) {
      const gr_pattern *p = matching(&t->groups[k].match, v->name);
      if (!p) continue;
      if (!v->group) {
        v->group = k + 1;
        continue;
      }
      const gr_param_group *a = &t->groups[v->group - 1], *b = &t->groups[k];
      if (a->lr_mult != b->lr_mult || a->wd_mult != b->wd_mult) {
        gr_error(d, p->loc, "parameter '%s' is in two groups with different settings (lr_mult %g and %g, weight_decay_mult %g and %g)",
                 v->name, a->lr_mult, b->lr_mult, a->wd_mult, b->wd_mult);
        gr_note(d, a->loc, "the first group matching it");
        ok = false;
        break;
      }
    }
  }
  return ok;
}

bool gr_apply_transfer(gr_graph *g, const gr_transfer *t, int phase, gr_diag *d) {
  bool ok = all_match(g, &t->exclude, any_param, "init exclude", "", d); /* parameters or buffers */
  ok = ok && mark(g, &t->freeze, true, "freeze", 0, d) && mark(g, &t->unfreeze, false, "unfreeze", 0, d);
  /* gradual unfreezing: every phase's patterns are checked (each must match a parameter still
   * frozen when it starts), then the parameters of phases after `phase` are frozen again */
  for (int i = 0; ok && i < t->n_phases; i++) {
    char key[48];
    snprintf(key, sizeof key, "phase %d unfreeze", i + 1);
    ok = mark(g, &t->phases[i].unfreeze, false, key, i, d);
  }
  for (int i = 0; ok && i < g->n_values; i++)
    if (is_weight(g->values[i]) && g->values[i]->phase > phase) g->values[i]->trainable = false;
  ok = ok && apply_batchnorm(g, t, d) && apply_groups(g, t, d);
  return ok;
}
