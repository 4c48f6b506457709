/* graph.c — the op table's name columns, and the graph builders. Builders append nodes in topological
 * order and run the shape rule at once (see ir.h). */
#include "ir/ir.h"
#include <string.h>

const gr_op_info gr_ops[GR_OP_COUNT] = {
#define OP(id, name, arity, kclass, flags, shape, grad, emit) [GR_OP_##id] = {name, arity, GR_KC_##kclass, flags},
#include "ir/ops.def"
#undef OP
};
const char *const gr_kclass_name[GR_KC_COUNT] = {"none", "view", "elem", "gemm", "custom"};
const char *const gr_dtype_name[GR_DTYPE_COUNT] = {"f32", "f64", "i32"};
const int gr_dtype_size[GR_DTYPE_COUNT] = {4, 8, 4};

gr_graph *gr_graph_new(gr_arena *a, gr_diag *d, gr_dtype fdtype) {
  gr_graph *g = gr_alloc(a, sizeof *g);
  g->arena = a;
  g->diag = d;
  g->fdtype = fdtype;
  return g;
}

static gr_node *new_node(gr_graph *g, gr_op op, gr_value *const *in, int n_in, const gr_attrs *a, gr_loc loc) {
  GR_CHECK(n_in == gr_ops[op].arity, "op %s takes %d inputs, got %d", gr_ops[op].name, gr_ops[op].arity, n_in);
  gr_node *n = gr_alloc(g->arena, sizeof *n);
  n->op = op;
  n->n_in = n_in;
  for (int i = 0; i < n_in; i++) {
    GR_ASSERT(in[i] != NULL);
    n->in[i] = in[i];
  }
  if (a) n->a = *a;
  n->loc = loc;
  n->layer = g->layer;
  n->backward = g->in_backward;
  return n;
}

static void push_node(gr_graph *g, gr_node *n) {
  gr_grow(g->arena, (void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes);
  n->id = g->n_nodes;
  g->nodes[g->n_nodes++] = n;
}

static gr_value *new_value(gr_graph *g, gr_node *def, gr_dtype dt, gr_shape shape, const char *name, gr_role role) {
  gr_value *v = gr_alloc(g->arena, sizeof *v);
  v->dtype = dt;
  v->shape = shape;
  v->def = def;
  v->name = name ? gr_strdup(g->arena, name) : NULL;
  v->role = role;
  v->slab_offset = -1;
  gr_grow(g->arena, (void **)&g->values, &g->cap_values, g->n_values + 1, sizeof *g->values);
  v->id = g->n_values;
  g->values[g->n_values++] = v;
  def->out = v;
  return v;
}

static gr_value *leaf(gr_graph *g, gr_op op, const char *name, gr_dtype dt, gr_shape shape, gr_role role, gr_loc loc) {
  gr_node *n = new_node(g, op, NULL, 0, NULL, loc);
  push_node(g, n);
  gr_value *v = new_value(g, n, dt, shape, name, role);
  v->zero_row = -1;
  return v;
}

gr_value *gr_input(gr_graph *g, const char *name, gr_dtype dt, gr_shape shape, gr_loc loc) {
  return leaf(g, GR_OP_INPUT, name, dt, shape, GR_ROLE_INPUT, loc);
}

gr_value *gr_param(gr_graph *g, const char *name, gr_shape shape, float init_bound, gr_loc loc) {
  gr_value *v = leaf(g, GR_OP_PARAM, name, g->fdtype, shape, GR_ROLE_PARAM, loc);
  v->trainable = true;
  v->init_bound = init_bound;
  return v;
}

gr_value *gr_buffer(gr_graph *g, const char *name, gr_shape shape, float value, gr_loc loc) {
  gr_value *v = leaf(g, GR_OP_PARAM, name, g->fdtype, shape, GR_ROLE_PARAM, loc);
  v->init_value = value;
  v->buffer = true;
  return v;
}

gr_value *gr_state(gr_graph *g, const char *name, gr_shape shape) {
  return leaf(g, GR_OP_STATE, name, g->fdtype, shape, GR_ROLE_STATE, (gr_loc){0});
}

gr_value *gr_apply(gr_graph *g, gr_op op, gr_value *const *in, int n_in, const gr_attrs *a, gr_loc loc) {
  GR_CHECK(!(gr_ops[op].flags & GR_OPF_UPD), "use gr_apply_update for %s", gr_ops[op].name);
  for (int i = 0; i < n_in; i++)
    if (!in[i]) return NULL; /* an earlier error; already reported */
  gr_node *n = new_node(g, op, in, n_in, a, loc);
  gr_shape shape;
  gr_dtype dt;
  char err[512];
  if (!gr_infer_shape(n, &shape, &dt, err, sizeof err)) {
    if (n->layer)
      gr_error(g->diag, loc, "in layer '%s': %s", n->layer, err);
    else
      gr_error(g->diag, loc, "%s", err);
    return NULL;
  }
  push_node(g, n);
  return new_value(g, n, dt, shape, NULL, GR_ROLE_TEMP);
}

gr_node *gr_apply_update(gr_graph *g, gr_op op, gr_value *const *in, int n_in, const gr_attrs *a, gr_loc loc) {
  GR_CHECK(gr_ops[op].flags & GR_OPF_UPD, "%s is not an update op", gr_ops[op].name);
  gr_node *n = new_node(g, op, in, n_in, a, loc);
  gr_shape shape;
  gr_dtype dt;
  char err[512];
  GR_CHECK(gr_infer_shape(n, &shape, &dt, err, sizeof err), "%s", err);
  push_node(g, n);
  return n;
}

gr_value *gr_unary(gr_graph *g, gr_op op, gr_value *x, gr_loc loc) { return gr_apply(g, op, &x, 1, NULL, loc); }

gr_value *gr_binary(gr_graph *g, gr_op op, gr_value *x, gr_value *y, gr_loc loc) {
  gr_value *in[2] = {x, y};
  return gr_apply(g, op, in, 2, NULL, loc);
}

gr_value *gr_matmul(gr_graph *g, gr_value *a, gr_value *b, int trans_a, int trans_b, gr_loc loc) {
  gr_attrs at = {.trans_a = trans_a, .trans_b = trans_b};
  gr_value *in[2] = {a, b};
  return gr_apply(g, GR_OP_MATMUL, in, 2, &at, loc);
}

gr_value *gr_reshape(gr_graph *g, gr_value *x, gr_shape shape, gr_loc loc) {
  gr_attrs at = {.shape = shape};
  return gr_apply(g, GR_OP_RESHAPE, &x, 1, &at, loc);
}
