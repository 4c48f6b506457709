/* transfer.c — the plan keys of transfer learning (docs/format.md, "Transfer learning"):
 *
 *   init: weights.safetensors            or a mapping:
 *   init:
 *     file: resnet18.safetensors         required
 *     rename: {"backbone.": ""}          file-name prefix -> model-name prefix (first match applies)
 *     exclude: [fc]                      model parameters that start fresh (head surgery); file tensors
 *                                        matching them are ignored
 *   freeze: [conv1, bn1, "layer[12]"]    patterns: these parameters are not trained
 *   unfreeze: ["layer2.1"]               exceptions to freeze
 *   batchnorm: frozen                    train, frozen, adapt or auto (default) for every batchnorm
 *                                        layer; or a list of {match: PATTERNS, mode: MODE}
 *   param_groups:                        discriminative fine-tuning
 *     - {match: layer4, lr_mult: 0.1, weight_decay_mult: 1}
 *
 * Patterns are a string or a list of strings. What they match is checked by the compiler's freeze
 * pass (compiler/freeze.c), which knows the model; here only the form is checked. */
#include "frontends/frontend.h"
#include "frontends/yamldoc.h"
#include "runtime/model.h"
#include <string.h>

const char *const gr_bn_mode_names[GR_BN_MODE_COUNT + 1] = {"auto", "train", "frozen", "adapt", NULL};

/* A pattern or a list of them: strings, non-empty. */
static bool parse_patterns(gr_ydoc *y, gr_ynode *n, const char *what, gr_patterns *out) {
  bool list = n->type == YAML_SEQUENCE_NODE;
  int k = list ? gr_ylist_len(n) : 1;
  if (k < 1 || (!list && n->type != YAML_SCALAR_NODE)) {
    gr_error(y->diag, gr_yloc(y, n), "%s must be a name pattern or a non-empty list of them, got %s", what, gr_ydescribe(y, n));
    return false;
  }
  out->v = gr_alloc(y->arena, sizeof(gr_pattern) * (size_t)k);
  out->n = 0;
  for (int i = 0; i < k; i++) {
    gr_ynode *e = list ? gr_ylist_at(y, n, i) : n;
    const char *s;
    if (!gr_ystr(y, e, what, &s)) return false;
    if (!*s) {
      gr_error(y->diag, gr_yloc(y, e), "%s: an empty pattern matches nothing", what);
      return false;
    }
    out->v[out->n++] = (gr_pattern){gr_strdup(y->arena, s), gr_yloc(y, e)};
  }
  return true;
}

static const char *const init_keys[] = {"file", "rename", "exclude", NULL};

bool gr_parse_init(gr_ydoc *y, gr_ynode *init, gr_plan *p) {
  gr_ynode *file = init;
  if (init->type == YAML_MAPPING_NODE) {
    if (!gr_ymap_check(y, init, "'init'", init_keys) || !(file = gr_yreq(y, init, "file", "'init'"))) return false;
  }
  const char *ip;
  if (!gr_ystr(y, file, "'init'", &ip)) return false;
  p->init_path = gr_ypath(y, ip);
  p->init_loc = gr_yloc(y, file);
  if (init == file) return true;
  gr_ynode *rn = gr_yget(y, init, "rename"), *ex = gr_yget(y, init, "exclude");
  if (ex && !parse_patterns(y, ex, "'exclude'", &p->tl.exclude)) return false;
  if (!rn) return true;
  if (rn->type != YAML_MAPPING_NODE || !gr_ymap_check(y, rn, "'rename'", NULL)) {
    if (rn->type != YAML_MAPPING_NODE)
      gr_error(y->diag, gr_yloc(y, rn), "'rename' must be a mapping of name prefixes in the file to prefixes in the model, like "
                                        "{\"backbone.\": \"\"}, got %s", gr_ydescribe(y, rn));
    return false;
  }
  int n = (int)(rn->data.mapping.pairs.top - rn->data.mapping.pairs.start);
  p->tl.rename_from = gr_alloc(y->arena, sizeof(char *) * (size_t)(n + 1));
  p->tl.rename_to = gr_alloc(y->arena, sizeof(char *) * (size_t)(n + 1));
  for (int i = 0; i < n; i++) {
    gr_ynode *k = yaml_document_get_node(&y->doc, rn->data.mapping.pairs.start[i].key);
    gr_ynode *v = yaml_document_get_node(&y->doc, rn->data.mapping.pairs.start[i].value);
    const char *from, *to;
    if (!gr_ystr(y, k, "a 'rename' prefix", &from) || !gr_ystr(y, v, "a 'rename' prefix", &to)) return false;
    p->tl.rename_from[p->tl.n_rename] = gr_strdup(y->arena, from);
    p->tl.rename_to[p->tl.n_rename++] = gr_strdup(y->arena, to);
  }
  return true;
}

/* The length of a list of rules (1 .. max items), or 0 after reporting `expected` (what it must be). */
static int rule_list(gr_ydoc *y, gr_ynode *n, int max, const char *expected) {
  int k = gr_ylist_len(n);
  if (k >= 1 && k <= max) return k;
  gr_error(y->diag, gr_yloc(y, n), "%s, got %s", expected, gr_ydescribe(y, n));
  return 0;
}

static const char *const bn_keys[] = {"match", "mode", NULL};
static const char *const phase_keys[] = {"epochs", "unfreeze", "lr_mult", NULL};
static const char *const group_keys[] = {"match", "lr_mult", "weight_decay_mult", NULL};

bool gr_parse_transfer(gr_ydoc *y, gr_ynode *root, gr_plan *p) {
  gr_transfer *t = &p->tl;
  gr_ynode *fr = gr_yget(y, root, "freeze"), *uf = gr_yget(y, root, "unfreeze");
  gr_ynode *bn = gr_yget(y, root, "batchnorm"), *pg = gr_yget(y, root, "param_groups");
  bool ok = (!fr || parse_patterns(y, fr, "'freeze'", &t->freeze)) && (!uf || parse_patterns(y, uf, "'unfreeze'", &t->unfreeze));
  if (uf && !fr) {
    gr_error(y->diag, gr_ykey_loc(y, root, "unfreeze"), "'unfreeze' makes exceptions to 'freeze', but the plan freezes nothing");
    ok = false;
  }
  if (bn && bn->type == YAML_SCALAR_NODE) { /* one mode for every batchnorm layer */
    int mode;
    if (!gr_yenum(y, bn, "batchnorm mode", gr_bn_mode_names, &mode)) return false;
    t->bn = gr_alloc(y->arena, sizeof(gr_bn_rule));
    gr_pattern *all = gr_alloc(y->arena, sizeof(gr_pattern));
    *all = (gr_pattern){"*", gr_yloc(y, bn)};
    t->bn[t->n_bn++] = (gr_bn_rule){{all, 1}, (gr_bn_mode)mode, gr_yloc(y, bn)};
  } else if (bn) {
    int n = rule_list(y, bn, 1 << 20, "'batchnorm' must be a mode (train, frozen, adapt, auto) or a list of {match, mode}");
    if (!n) return false;
    t->bn = gr_alloc(y->arena, sizeof(gr_bn_rule) * (size_t)n);
    for (int i = 0; i < n; i++) {
      gr_ynode *r = gr_ylist_at(y, bn, i), *m, *md;
      int mode;
      if (!gr_ymap_check(y, r, "a 'batchnorm' rule", bn_keys) || !(m = gr_yreq(y, r, "match", "a 'batchnorm' rule")) ||
          !(md = gr_yreq(y, r, "mode", "a 'batchnorm' rule")) || !gr_yenum(y, md, "batchnorm mode", gr_bn_mode_names, &mode))
        return false;
      gr_bn_rule *rule = &t->bn[t->n_bn++];
      rule->mode = (gr_bn_mode)mode;
      rule->loc = gr_yloc(y, r);
      if (!parse_patterns(y, m, "'match'", &rule->match)) return false;
    }
  }
  if (pg) {
    int n = rule_list(y, pg, 1 << 20, "'param_groups' must be a non-empty list of {match, lr_mult, weight_decay_mult}");
    if (!n) return false;
    t->groups = gr_alloc(y->arena, sizeof(gr_param_group) * (size_t)n);
    for (int i = 0; i < n; i++) {
      gr_ynode *r = gr_ylist_at(y, pg, i), *m;
      if (!gr_ymap_check(y, r, "a parameter group", group_keys) || !(m = gr_yreq(y, r, "match", "a parameter group"))) return false;
      gr_param_group *grp = &t->groups[t->n_groups++];
      *grp = (gr_param_group){.lr_mult = 1, .wd_mult = 1, .loc = gr_yloc(y, r)};
      if (!parse_patterns(y, m, "'match'", &grp->match) || !gr_yopt_float(y, r, "lr_mult", 0, 1e6, &grp->lr_mult) ||
          !gr_yopt_float(y, r, "weight_decay_mult", 0, 1e6, &grp->wd_mult))
        return false;
      if (grp->lr_mult == 0) {
        gr_error(y->diag, gr_yloc(y, gr_yget(y, r, "lr_mult")), "'lr_mult' must be greater than 0; to keep parameters fixed, freeze them");
        return false;
      }
    }
  }
  gr_ynode *ph = gr_yget(y, root, "phases");
  if (ph) {
    _Static_assert(GR_MAX_PHASES == 16, "the message below names the limit");
    int n = rule_list(y, ph, GR_MAX_PHASES, "'phases' must be a list of 1 to 16 phases {epochs, unfreeze, lr_mult}");
    if (!n) return false;
    t->phases = gr_alloc(y->arena, sizeof(gr_phase_spec) * (size_t)n);
    for (int i = 0; i < n; i++) {
      gr_ynode *r = gr_ylist_at(y, ph, i), *e, *u;
      if (!gr_ymap_check(y, r, "a phase", phase_keys) || !(e = gr_yreq(y, r, "epochs", "a phase"))) return false;
      gr_phase_spec *s = &t->phases[t->n_phases++];
      *s = (gr_phase_spec){.lr_mult = 1, .loc = gr_yloc(y, r)};
      if (!gr_yint(y, e, "'epochs'", 1, 100000, &s->epochs) || !gr_yopt_float(y, r, "lr_mult", 1e-12, 1e6, &s->lr_mult)) return false;
      if ((u = gr_yget(y, r, "unfreeze")) && !parse_patterns(y, u, "'unfreeze'", &s->unfreeze)) return false;
    }
  }
  return ok;
}
