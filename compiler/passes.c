/* passes.c — the pass driver: one function that runs every pass for a plan, in the order listed in
 * gr_pass_names, and can print the IR after any of them (`graft ir --after=PASS`). Each pass lives in
 * its own file and says there what it requires and guarantees. */
#include "compiler/compiler.h"
#include <stdlib.h>
#include <string.h>

const char *const gr_pass_names[] = {"frontend", "freeze", "fold", "loss", "autodiff", "optimizer", "fuse", "memplan", "codegen", NULL};

static bool dump_here(const gr_compile_opts *o, const char *pass) {
  return o && o->dump_after && !strcmp(o->dump_after, pass);
}

/* The nodes needed to compute `want` (and, if `updates`, to run every update node), in graph order.
 * Nothing else is compiled: a layer the output does not use costs nothing. A `stop` value (may be
 * NULL) is taken as given: the nodes that compute it are left out, and the runtime writes it. */
static void select_program(gr_graph *g, gr_program *p, const char *name, gr_value **want, int n_want, bool updates,
                           const gr_value *stop) {
  bool *need = gr_alloc(g->arena, (size_t)g->n_values);
  for (int k = 0; k < n_want; k++) need[want[k]->id] = true;
  bool *take = gr_alloc(g->arena, (size_t)g->n_nodes);
  int count = 0;
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    gr_node *n = g->nodes[i];
    bool root = updates && (gr_ops[n->op].flags & GR_OPF_UPD);
    if (!root && !(n->out && need[n->out->id] && n->out != stop)) continue;
    take[i] = true;
    count++;
    for (int k = 0; k < n->n_in; k++) need[n->in[k]->id] = true;
  }
  p->name = name;
  p->nodes = gr_alloc(g->arena, sizeof(gr_node *) * (size_t)(count + 1));
  for (int i = 0; i < g->n_nodes; i++)
    if (take[i]) p->nodes[p->n_nodes++] = g->nodes[i];
  p->keep = gr_alloc(g->arena, sizeof(gr_value *) * (size_t)n_want);
  for (int k = 0; k < n_want; k++) p->keep[p->n_keep++] = want[k];
}

/* The feature cache's cut: the value where the frozen, deterministic prefix of the training forward
 * pass hands over to the rest. A node is static if it is a forward node whose inputs are all static
 * (the model input, frozen parameters and buffers, static nodes' outputs) and it is neither dropout
 * nor batchnorm with batch statistics: its output for a sample never changes during training. The
 * cut is the one static value (other than the input) that non-static nodes of the training program
 * read; with none or several, or a cut that is only a view of the input, there is no cache (NULL). */
static const gr_value *cache_cut(gr_compiled *c) {
  gr_graph *g = c->g;
  bool *stat = gr_alloc(g->arena, (size_t)g->n_values);
  stat[c->model.input->id] = true;
  for (int i = 0; i < g->n_values; i++) {
    const gr_value *v = g->values[i];
    if (v->role == GR_ROLE_PARAM && !v->trainable) stat[v->id] = true;
  }
  const gr_program *p = &c->train;
  for (int i = 0; i < p->n_nodes; i++) {
    const gr_node *n = p->nodes[i];
    if (!n->out || n->backward || n->op == GR_OP_INPUT || n->op == GR_OP_PARAM || n->op == GR_OP_DROPOUT ||
        (n->op == GR_OP_BATCHNORM && n->a.training))
      continue;
    bool all = true;
    for (int k = 0; k < n->n_in && all; k++) all = stat[n->in[k]->id];
    stat[n->out->id] = all;
  }
  const gr_value *cut = NULL;
  for (int i = 0; i < p->n_nodes; i++) {
    const gr_node *n = p->nodes[i];
    if (n->out && stat[n->out->id]) continue; /* a static node (or leaf): its inputs are inside the prefix */
    if (gr_ops[n->op].flags & GR_OPF_UPD) continue;
    for (int k = 0; k < n->n_in; k++) {
      const gr_value *v = n->in[k];
      if (gr_storage_root(v) == c->model.input) return NULL; /* the trained part reads the input itself */
      if (!stat[v->id] || v->role == GR_ROLE_PARAM) continue;
      if (cut && cut != v) return NULL; /* two hand-over values: not a single cut */
      cut = v;
    }
  }
  if (!cut || gr_storage_root(cut) == c->model.input || !gr_shape_has_batch(&cut->shape)) return NULL;
  return cut;
}

/* A training step must train a parameter or move batchnorm statistics (re-estimating them with
 * everything frozen, batchnorm: adapt, is a use); otherwise the plan is an error at what froze it all. */
static bool something_to_train(gr_compiled *c, int phase) {
  gr_graph *g = c->g;
  for (int i = 0; i < g->n_nodes; i++) {
    const gr_node *n = g->nodes[i];
    if ((gr_ops[n->op].flags & GR_OPF_UPD) || (n->op == GR_OP_BATCHNORM && n->a.training)) return true;
  }
  const gr_transfer *t = &c->plan.tl;
  gr_loc at = t->n_phases ? t->phases[phase].loc : t->freeze.n ? t->freeze.v[0].loc : c->plan.model_loc;
  if (t->n_phases)
    gr_error(c->diag, at, "phase %d trains nothing: every parameter is frozen and no batchnorm layer updates its statistics", phase + 1);
  else
    gr_error(c->diag, at, "the plan trains nothing: every parameter is frozen and no batchnorm layer updates its statistics");
  return false;
}

/* Warns about layers whose output does not reach the model's output: they are not compiled. */
static void warn_unused_layers(gr_compiled *c) {
  gr_graph *g = c->g;
  bool *used = gr_alloc(g->arena, (size_t)g->n_values);
  used[c->model.output->id] = true;
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    gr_node *n = g->nodes[i];
    if (n->out && used[n->out->id])
      for (int k = 0; k < n->n_in; k++) used[n->in[k]->id] = true;
  }
  for (int i = 0; i < c->model.n_layers; i++)
    if (!used[c->model.layer_outputs[i]->id])
      gr_warning(c->diag, c->model.layer_locs[i], "layer '%s' does not contribute to the model's output; it is not computed",
                 c->model.layer_names[i]);
}

/* A program's nodes in order, each fused kernel named at its first node and its epilogue's nodes
 * marked; with memory planned (offsets), where every value lives. */
static void dump_program(const gr_graph *g, const gr_program *p, FILE *out) {
  int fused, kernels = gr_program_kernels(p, &fused);
  fprintf(out, "program %s: %d nodes, %d kernels (%d nodes fused into them)", p->name, p->n_nodes, kernels, fused);
  if (p->offsets) fprintf(out, ", arena %lld bytes", (long long)p->arena_bytes);
  fputc('\n', out);
  const gr_node *anchor = NULL;
  for (int i = 0; i < p->n_nodes; i++) {
    const gr_node *n = p->nodes[i];
    gr_node_dump(n, out);
    int len = p->chain[n->id];
    if (len) {
      anchor = n;
      fprintf(out, "  [kernel %s", gr_ops[n->op].name);
      for (int k = 1; k <= len; k++) fprintf(out, "+%s", gr_ops[p->nodes[i + k]->op].name);
      fputc(']', out);
    }
    if (p->in_chain[n->id]) fprintf(out, "  [fused into %%%d's kernel]", anchor->out->id);
    if (n->out && p->unstored[n->out->id]) fputs("  (not stored)", out);
    if (n->out && p->offsets) {
      const gr_value *r = gr_storage_root(n->out);
      if (r->role == GR_ROLE_PARAM || r->role == GR_ROLE_STATE)
        fprintf(out, "  @slab+%lld", (long long)r->slab_offset);
      else if (p->offsets[n->out->id] >= 0)
        fprintf(out, "  @arena+%lld", (long long)p->offsets[n->out->id]);
    }
    fputc('\n', out);
  }
  (void)g;
}

/* OpenBLAS takes 32-bit dimensions: a convolution's batch-wide GEMM has N*Ho*Wo columns and
 * Cin*kh*kw rows (a matmul's dimensions are each far below the limit: N <= 65536, features <= 2^24). */
static bool check_blas_limits(gr_compiled *c) {
  gr_graph *g = c->g;
  int64_t B = c->plan.batch_size;
  for (int i = 0; i < g->n_nodes; i++) {
    const gr_node *n = g->nodes[i];
    int64_t big = 0;
    if (n->op == GR_OP_CONV2D || n->op == GR_OP_CONV2D_BN) {
      gr_conv_geom cg = gr_conv_geometry(&n->in[0]->shape, &n->in[1]->shape, &n->a);
      big = B * cg.ho * cg.wo > cg.cin * cg.kh * cg.kw ? B * cg.ho * cg.wo : cg.cin * cg.kh * cg.kw;
    }
    if (big > INT32_MAX) {
      gr_error(c->diag, n->loc, "layer '%s' is too large for a batch of %lld: a dimension of %lld exceeds the 2^31 - 1 that BLAS takes",
               n->layer ? n->layer : "?", (long long)B, (long long)big);
      return false;
    }
  }
  return true;
}

static int64_t arena_offset(const gr_program *p, const gr_value *v) { return v ? p->offsets[gr_storage_root(v)->id] : -1; }

static void fill_rt(gr_compiled *c, int64_t slab_bytes) {
  gr_graph *g = c->g;
  gr_rt_model *rt = &c->rt;
  rt->dtype = g->fdtype;
  rt->max_batch = c->plan.batch_size;
  rt->slab_bytes = slab_bytes;
  rt->in_shape = c->model.input->shape;
  rt->sample_numel = gr_shape_inner(&rt->in_shape);
  rt->in_dtype = c->model.input->dtype;
  rt->n_groups = c->plan.tl.n_groups;
  for (int k = 0; k < rt->n_groups; k++) rt->lr_mult[k] = c->plan.tl.groups[k].lr_mult;
  rt->n_classes = gr_shape_inner(&c->model.output->shape);
  rt->target_numel = c->labels->dtype == GR_I32 ? 0 : rt->n_classes;
  rt->accuracy = c->plan.loss == GR_LOSS_CROSS_ENTROPY ? GR_ACC_ARGMAX : c->plan.loss == GR_LOSS_BCE_LOGITS ? GR_ACC_BINARY : GR_ACC_NONE;
  for (int i = 0; i < g->n_nodes; i++) { /* integer inputs index embedding tables: the smallest bounds them */
    const gr_node *n = g->nodes[i];
    if (n->op == GR_OP_EMBEDDING && gr_storage_root(n->in[0]) == c->model.input &&
        (!rt->in_limit || n->in[1]->shape.dim[0] < rt->in_limit))
      rt->in_limit = n->in[1]->shape.dim[0];
  }
  int np = 0;
  for (int i = 0; i < g->n_values; i++) np += g->values[i]->role == GR_ROLE_PARAM;
  rt->params = gr_alloc(&c->arena, sizeof(gr_rt_param) * (size_t)(np + 1));
  for (int i = 0; i < g->n_values; i++) {
    gr_value *v = g->values[i];
    if (v->role != GR_ROLE_PARAM) continue;
    rt->params[rt->n_params++] = (gr_rt_param){v->name, v->slab_offset, v->shape, gr_shape_inner(&v->shape), v->init_bound,
                                               v->init_value, v->init_std, v->zero_row, v->trainable, v->buffer, v->def->loc};
  }
  int ns = 0;
  for (int i = 0; i < g->n_values; i++) ns += g->values[i]->role == GR_ROLE_STATE;
  rt->states = gr_alloc(&c->arena, sizeof(gr_rt_param) * (size_t)(ns + 1));
  for (int i = 0; i < g->n_values; i++) {
    gr_value *v = g->values[i];
    if (v->role == GR_ROLE_STATE)
      rt->states[rt->n_states++] = (gr_rt_param){.name = v->name, .offset = v->slab_offset, .shape = v->shape,
                                                 .numel = gr_shape_inner(&v->shape), .zero_row = -1};
  }
  gr_program *ps[2] = {&c->train, &c->eval};
  gr_rt_program *rs[2] = {&rt->train, &rt->eval};
  if (c->cut) { /* the feature cache: graft_features computes the cut from the input; graft_train_cached reads it */
    rt->feat_numel = gr_shape_inner(&c->cut->shape);
    rt->cache_budget = c->plan.feature_cache_mb << 20;
    rt->cache_spill = c->plan.feature_cache_spill;
    rt->cache_dir = c->plan.feature_cache_dir;
    rt->features = (gr_rt_program){.name = c->features.name, .fn = c->features.fn, .arena_bytes = c->features.arena_bytes,
                                   .x_off = arena_offset(&c->features, c->model.input), .y_off = -1, .dloss_off = -1, .loss_off = -1,
                                   .out_off = arena_offset(&c->features, c->cut), .dom_y_off = -1, .dom_out_off = -1,
                                   .label_loss_off = -1, .dom_loss_off = -1};
    gr_program *t = &c->train_cached;
    rt->train_cached = (gr_rt_program){.name = t->name, .fn = t->fn, .arena_bytes = t->arena_bytes, .x_off = arena_offset(t, c->cut),
                                       .y_off = arena_offset(t, c->labels), .dloss_off = arena_offset(t, c->dloss),
                                       .loss_off = arena_offset(t, c->loss), .out_off = arena_offset(t, c->model.output),
                                       .dom_y_off = -1, .dom_out_off = -1, .label_loss_off = -1, .dom_loss_off = -1};
  }
  for (int k = 0; k < 2; k++) {
    const gr_model *m = k == 0 ? &c->model : &c->eval_model;
    *rs[k] = (gr_rt_program){.name = ps[k]->name, .fn = ps[k]->fn, .arena_bytes = ps[k]->arena_bytes,
                             .x_off = arena_offset(ps[k], m->input), .y_off = arena_offset(ps[k], c->labels),
                             .dloss_off = k == 0 ? arena_offset(ps[k], c->dloss) : -1,
                             .loss_off = arena_offset(ps[k], k == 0 ? c->loss : c->eval_loss), .out_off = arena_offset(ps[k], m->output),
                             .dom_y_off = k == 0 ? arena_offset(ps[k], c->dom_labels) : -1,
                             .dom_out_off = arena_offset(ps[k], k == 0 ? c->dom_out : c->eval_dom_out),
                             .label_loss_off = k == 0 ? arena_offset(ps[k], c->label_loss) : -1,
                             .dom_loss_off = k == 0 ? arena_offset(ps[k], c->dom_loss) : -1};
  }
  rt->domain = c->dom_out != NULL;
  for (int k = 0; k < 2; k++) { /* where the training programs leave each parameter's gradient */
    gr_program *tp = k ? &c->train_cached : &c->train;
    gr_rt_program *rp = k ? &rt->train_cached : &rt->train;
    if (k && !c->cut) continue;
    int64_t *offs = gr_alloc(&c->arena, sizeof(int64_t) * (size_t)(rt->n_params + 1));
    for (int i = 0, j = 0; i < g->n_values; i++) {
      const gr_value *v = g->values[i];
      if (v->role == GR_ROLE_PARAM) offs[j++] = v->grad ? arena_offset(tp, v->grad) : -1;
    }
    rp->grad_off = offs;
  }
}

/* Domain adaptation: the plan's head on the output of its `features` layer behind a gradient
 * reversal (and again on the evaluation twin's, sharing parameters), its cross-entropy against the
 * domain labels, and the training loss made the sum of the label and domain losses. */
static bool build_domain(gr_compiled *c) {
  gr_graph *g = c->g;
  const gr_domain *dm = &c->plan.domain;
  gr_value *feat[2] = {NULL, NULL};
  const gr_model *ms[2] = {&c->model, &c->eval_model};
  for (int k = 0; k < 2; k++)
    for (int i = 0; i < ms[k]->n_layers; i++)
      if (!strcmp(ms[k]->layer_names[i], dm->features)) feat[k] = ms[k]->layer_outputs[i];
  if (!feat[0]) {
    char names[512];
    int len = 0;
    for (int i = 0; i < c->model.n_layers && len < (int)sizeof names - 40; i++)
      len += snprintf(names + len, sizeof names - (size_t)len, "%s%s", i ? ", " : "", c->model.layer_names[i]);
    gr_error(c->diag, dm->features_loc, "the model has no layer '%s' for the domain head to read", dm->features);
    gr_note(c->diag, c->model.input_loc, "the layers of model '%s' are: %s%s", c->model.name, names, len >= (int)sizeof names - 40 ? ", ..." : "");
    return false;
  }
  gr_value *out[2] = {NULL, NULL};
  gr_loc at = dm->head_loc;
  for (int k = 0; k < (c->model.mode_dependent ? 2 : 1); k++) {
    gr_value *rev = gr_unary(g, GR_OP_GRAD_REVERSE, feat[k], dm->features_loc);
    if (!rev || !gr_model_head(c->plan.path, "domain_adaptation", "head", "domain.", g, k ? GR_MODE_EVAL : GR_MODE_TRAIN, rev, &out[k], &at))
      return false;
  }
  if (!c->model.mode_dependent) out[1] = out[0];
  const gr_shape *s = &out[0]->shape;
  if (s->rank != 2 || s->dim[1] != 2) {
    char buf[64];
    gr_error(c->diag, at, "the domain head must end in 2 outputs per sample (source, target), this one gives %s", gr_shape_str(s, buf, sizeof buf));
    return false;
  }
  c->dom_labels = gr_input(g, "domain_labels", GR_I32, gr_shape_make(1, (int64_t[]){GR_BATCH}), dm->loc);
  gr_value *in[2] = {out[0], c->dom_labels};
  gr_attrs none = {0};
  c->dom_loss = gr_apply(g, GR_OP_SOFTMAX_CE, in, 2, &none, dm->loc);
  GR_CHECK(c->dom_loss != NULL, "domain loss");
  c->label_loss = c->loss;
  c->loss = gr_binary(g, GR_OP_ADD, c->label_loss, c->dom_loss, dm->loc);
  c->dom_in = feat[0];
  c->dom_out = out[0];
  c->eval_dom_out = out[1];
  return c->loss != NULL;
}

/* Whether the model takes what the plan's data gives: image folders give [C, H, W] pictures with C 1
 * or 3 and class labels; per-channel normalisation has one mean per channel. */
static bool check_data_fits(gr_compiled *c) {
  const gr_plan *p = &c->plan;
  const gr_value *in = c->model.input;
  if (p->data_format != GR_DATA_IMAGES) return true;
  if (in->dtype != GR_F32 || in->shape.rank != 4 || (in->shape.dim[1] != 1 && in->shape.dim[1] != 3)) {
    gr_error(c->diag, p->data_loc, "image folders give pictures of 1 or 3 channels, but the model's input is not [N, C, H, W] with C 1 or 3");
    gr_note(c->diag, c->model.input_loc, "the model's input is declared here");
    return false;
  }
  if (p->loss != GR_LOSS_CROSS_ENTROPY) {
    gr_error(c->diag, p->loss_loc, "image folders give class labels (their sub-folders), so the loss must be cross_entropy, not %s",
             gr_loss_names[p->loss]);
    return false;
  }
  if (p->n_norm > 1 && p->n_norm != in->shape.dim[1]) {
    gr_error(c->diag, p->norm_loc, "'normalize' has %d values per channel but the model's input has %lld channel%s", p->n_norm,
             (long long)in->shape.dim[1], in->shape.dim[1] == 1 ? "" : "s");
    gr_note(c->diag, c->model.input_loc, "the model's input is declared here");
    return false;
  }
  return true;
}

bool gr_compile_plan(const char *plan_path, gr_diag *d, const gr_compile_opts *o, gr_compiled *c) {
  memset(c, 0, sizeof *c);
  gr_arena_init(&c->arena);
  c->diag = d;
  FILE *dump = o && o->dump ? o->dump : stdout;
  /* frontend */
  if (!gr_plan_load(plan_path, &c->arena, d, &c->plan) || !c->plan.model_path) return false;
  c->g = gr_graph_new(&c->arena, d, GR_F32);
  gr_graph *g = c->g;
  if (!gr_model_load(c->plan.model_path, c->plan.model_loc, g, GR_MODE_TRAIN, &c->model)) return false;
  warn_unused_layers(c);
  if (!check_data_fits(c)) return false;
  c->eval_model = c->model;
  if (c->model.mode_dependent && !gr_model_load(c->plan.model_path, c->plan.model_loc, g, GR_MODE_EVAL, &c->eval_model)) return false;
  if (dump_here(o, "frontend")) return gr_graph_dump(g, dump, NULL), true;
  /* freeze */
  if (c->plan.tl.n_groups > GR_MAX_GROUPS) {
    gr_error(d, c->plan.tl.groups[GR_MAX_GROUPS].loc, "at most %d parameter groups", GR_MAX_GROUPS);
    return false;
  }
  if (!(o && o->no_transfer) && !gr_apply_transfer(g, &c->plan.tl, o ? o->phase : 0, d)) return false;
  if (dump_here(o, "freeze")) return gr_graph_dump(g, dump, NULL), true;
  /* fold */
  c->n_folded = c->plan.fold_batchnorm ? gr_fold_batchnorm(g) : 0;
  if (dump_here(o, "fold")) return gr_graph_dump(g, dump, NULL), true;
  /* loss */
  /* cross-entropy takes class labels [N]; the other losses float targets of the output's shape */
  static const gr_op loss_ops[GR_LOSS_COUNT] = {GR_OP_SOFTMAX_CE, GR_OP_BCE_LOGITS, GR_OP_MSE};
  gr_op lop = loss_ops[c->plan.loss];
  bool labels = lop == GR_OP_SOFTMAX_CE;
  c->labels = labels ? gr_input(g, "labels", GR_I32, gr_shape_make(1, (int64_t[]){GR_BATCH}), c->plan.loss_loc)
                     : gr_input(g, "targets", g->fdtype, c->model.output->shape, c->plan.loss_loc);
  gr_attrs la = {.smoothing = c->plan.label_smoothing};
  gr_value *lin[2] = {c->model.output, c->labels};
  c->loss = gr_apply(g, lop, lin, 2, &la, c->plan.loss_loc);
  if (!c->loss) {
    gr_note(d, c->model.output_loc, "the model's output comes from here");
    return false;
  }
  if ((c->plan.n_select || c->plan.per_class) && !labels) {
    gr_error(d, c->plan.n_select ? c->plan.select_loc : c->plan.per_class_loc, "'%s' selects by class label, but the %s loss takes float targets",
             c->plan.n_select ? "classes" : "per_class", gr_loss_names[c->plan.loss]);
    return false;
  }
  if (c->plan.n_select && c->plan.n_select != c->model.output->shape.dim[1]) {
    gr_error(d, c->plan.select_loc, "'classes' keeps %d classes, but the model's output has %lld", c->plan.n_select,
             (long long)c->model.output->shape.dim[1]);
    gr_note(d, c->model.output_loc, "the model's output comes from here");
    return false;
  }
  gr_value *ein[2] = {c->eval_model.output, c->labels};
  c->eval_loss = c->model.mode_dependent ? gr_apply(g, lop, ein, 2, &la, c->plan.loss_loc) : c->loss;
  GR_CHECK(c->eval_loss != NULL, "the evaluation twin's output does not fit the loss");
  if (c->plan.domain.present) {
    if (!labels) {
      gr_error(d, c->plan.loss_loc, "domain adaptation trains a classifier: the loss must be cross_entropy, not %s", gr_loss_names[c->plan.loss]);
      return false;
    }
    if (!build_domain(c)) return false;
  }
  if (dump_here(o, "loss")) return gr_graph_dump(g, dump, NULL), true;
  /* autodiff */
  c->dloss = gr_input(g, "loss.grad", g->fdtype, c->loss->shape, c->plan.loss_loc);
  int n_forward = g->n_nodes;
  if (!gr_autodiff(g, c->loss, c->dloss)) return false;
  if (dump_here(o, "autodiff")) return gr_graph_dump(g, dump, NULL), true;
  /* optimizer */
  gr_opt_cfg oc = {.kind = c->plan.opt.kind, .momentum = (float)c->plan.opt.momentum,
                   .weight_decay = (float)c->plan.opt.weight_decay, .nesterov = c->plan.opt.nesterov,
                   .beta1 = c->plan.opt.beta1, .beta2 = c->plan.opt.beta2, .eps = c->plan.opt.eps,
                   .clip_grad_norm = c->plan.opt.clip_grad_norm,
                   .groups = c->plan.tl.groups, .n_groups = c->plan.tl.n_groups};
  gr_add_optimizer(g, &oc);
  if (!something_to_train(c, o ? o->phase : 0)) return false;
  if (dump_here(o, "optimizer")) return gr_graph_dump(g, dump, NULL), true;
  /* memplan (the slab; arenas after fusion) */
  int64_t slab = gr_plan_slab(g);
  /* the runtime reads the loss, the output and the labels (for accuracy) after a step */
  /* ... and, when the loss is not finite, the gradients, to name the first that is not either */
  int n_keep = 3;
  gr_value **train_keep = gr_alloc(g->arena, sizeof(gr_value *) * (size_t)(g->n_values + 8));
  train_keep[0] = c->loss, train_keep[1] = c->model.output, train_keep[2] = c->labels;
  if (c->dom_out) { /* ... and, adapting domains, both losses, the domain head's output and the domain labels */
    train_keep[n_keep++] = c->label_loss, train_keep[n_keep++] = c->dom_loss;
    train_keep[n_keep++] = c->dom_out, train_keep[n_keep++] = c->dom_labels;
  }
  for (int i = 0; i < g->n_values; i++)
    if (g->values[i]->role == GR_ROLE_PARAM && g->values[i]->grad) train_keep[n_keep++] = g->values[i]->grad;
  select_program(g, &c->train, "graft_train", train_keep, n_keep, true, NULL);
  gr_value *eval_keep[4] = {c->eval_loss, c->eval_model.output, c->labels, c->eval_dom_out};
  select_program(g, &c->eval, "graft_eval", eval_keep, c->eval_dom_out ? 4 : 3, false, NULL);
  /* no feature cache when adapting domains: a step's batch is two data sets' rows */
  c->cut = c->plan.feature_cache && !c->dom_out ? cache_cut(c) : NULL;
  if (c->cut) { /* the frozen prefix once per sample (graft_features), the rest per step (graft_train_cached) */
    gr_value *cut = (gr_value *)c->cut;
    select_program(g, &c->features, "graft_features", &cut, 1, false, NULL);
    select_program(g, &c->train_cached, "graft_train_cached", train_keep, n_keep, true, c->cut);
    for (int i = 0; i < c->train_cached.n_nodes; i++) /* the runtime writes the cut, the labels and the loss seed */
      GR_CHECK(c->train_cached.nodes[i]->out != c->model.input, "the cached training program reads the model input");
  }
  for (int i = 0; i < c->eval.n_nodes; i++) GR_CHECK(c->eval.nodes[i]->id < n_forward, "eval program reaches backward nodes");
  if (!check_blas_limits(c)) return false;
  /* fuse */
  gr_program *all[4] = {&c->train, &c->eval, &c->features, &c->train_cached};
  for (int k = 0; k < (c->cut ? 4 : 2); k++) gr_fuse_program(g, all[k]);
  if (dump_here(o, "fuse")) {
    for (int k = 0; k < (c->cut ? 4 : 2); k++) dump_program(g, all[k], dump);
    return true;
  }
  /* memplan */
  gr_plan_arena(g, &c->train, c->plan.batch_size);
  gr_plan_arena(g, &c->eval, c->plan.batch_size);
  if (c->cut) {
    gr_plan_arena(g, &c->features, c->plan.batch_size);
    gr_plan_arena(g, &c->train_cached, c->plan.batch_size);
  }
  if (dump_here(o, "memplan")) {
    fprintf(dump, "slab %lld bytes\n", (long long)slab);
    dump_program(g, &c->train, dump);
    dump_program(g, &c->eval, dump);
    if (c->cut) {
      dump_program(g, &c->features, dump);
      dump_program(g, &c->train_cached, dump);
    }
    return true;
  }
  /* codegen */
  if (!(o && o->stop_before_codegen)) {
    gr_program progs[4] = {c->train, c->eval, c->features, c->train_cached};
    gr_codegen_opts cg = o ? o->cg : (gr_codegen_opts){0};
    if (dump_here(o, "codegen")) cg.llvm_dump = dump;
    c->jit = gr_jit_compile(g, progs, c->cut ? 4 : 2, &cg, d);
    if (!c->jit) return false;
    c->train.fn = progs[0].fn;
    c->eval.fn = progs[1].fn;
    c->features.fn = progs[2].fn;
    c->train_cached.fn = progs[3].fn;
  }
  fill_rt(c, slab);
  return true;
}

void gr_compiled_free(gr_compiled *c) {
  gr_jit_free(c->jit);
  gr_arena_free(&c->arena);
  memset(c, 0, sizeof *c);
}
