/* dump.c — the IR's text form, printed by `graft ir` and matched by golden tests. One line per node:
 *   %7 = relu %6 : f32[N, 256]            # fc1_act  (model.yaml:9:5)
 * Backward nodes are marked with a leading '~'; update nodes have no result. */
#include "ir/ir.h"
#include <inttypes.h>

static void print_value(const gr_value *v, FILE *out) {
  if (v->name && v->role != GR_ROLE_TEMP)
    fprintf(out, "%%%d(%s)", v->id, v->name);
  else
    fprintf(out, "%%%d", v->id);
}

void gr_node_dump(const gr_node *n, FILE *out) {
  char sb[96];
  fputs(n->backward ? "~ " : "  ", out);
  if (n->out) {
    print_value(n->out, out);
    fputs(" = ", out);
  }
  fputs(gr_ops[n->op].name, out);
  for (int i = 0; i < n->n_in; i++) {
    fputs(i ? ", " : " ", out);
    print_value(n->in[i], out);
  }
  if (n->op == GR_OP_MATMUL && (n->a.trans_a || n->a.trans_b))
    fprintf(out, " {trans_a=%d, trans_b=%d}", n->a.trans_a, n->a.trans_b);
  if (n->op == GR_OP_SGD_UPDATE || n->op == GR_OP_SGD_MOMENTUM_UPDATE)
    fprintf(out, " {lr=scalars[%d], momentum=%g, weight_decay=%g%s}", n->a.lr_slot, n->a.momentum, n->a.weight_decay, n->a.nesterov ? ", nesterov" : "");
  if (n->op == GR_OP_CONV2D || n->op == GR_OP_CONV2D_BN || n->op == GR_OP_CONV2D_GRAD_INPUT || n->op == GR_OP_CONV2D_GRAD_WEIGHT)
    fprintf(out, " {stride=%lldx%lld, padding=%lldx%lld, dilation=%lldx%lld, groups=%lld}", (long long)n->a.stride[0],
            (long long)n->a.stride[1], (long long)n->a.pad[0], (long long)n->a.pad[1], (long long)n->a.dilation[0],
            (long long)n->a.dilation[1], (long long)n->a.groups);
  if (n->op == GR_OP_MAXPOOL2D || n->op == GR_OP_AVGPOOL2D)
    fprintf(out, " {kernel=%lldx%lld, stride=%lldx%lld, padding=%lldx%lld}", (long long)n->a.kernel[0], (long long)n->a.kernel[1],
            (long long)n->a.stride[0], (long long)n->a.stride[1], (long long)n->a.pad[0], (long long)n->a.pad[1]);
  if (n->op == GR_OP_CONV2D_BN) fprintf(out, " {batchnorm folded in: running statistics, eps=%g}", n->a.bn_eps);
  if (n->op == GR_OP_BATCHNORM || n->op == GR_OP_BATCHNORM_GRAD_INPUT || n->op == GR_OP_BATCHNORM_GRAD_GAMMA)
    fprintf(out, " {%s, eps=%g, momentum=%g}", n->a.training ? "training" : "running statistics", n->a.bn_eps, n->a.bn_momentum);
  if ((n->op == GR_OP_SOFTMAX_CE || n->op == GR_OP_SOFTMAX_CE_GRAD) && n->a.smoothing > 0)
    fprintf(out, " {label_smoothing=%g}", n->a.smoothing);
  if (n->op == GR_OP_DROPOUT) fprintf(out, " {p=%g, salt=%d}", n->a.drop_p, n->a.salt);
  if (n->op == GR_OP_CONCAT) fprintf(out, " {axis=%d}", n->a.axis);
  if (n->op == GR_OP_SLICE) fprintf(out, " {axis=%d, start=%lld, len=%lld}", n->a.axis, (long long)n->a.start, (long long)n->a.len);
  if (n->op == GR_OP_ADAM_UPDATE)
    fprintf(out, " {lr=scalars[%d], step=scalars[%d], betas=(%g, %g), eps=%g, weight_decay=%g%s}", n->a.lr_slot, n->a.step_slot,
            n->a.beta1, n->a.beta2, n->a.eps, n->a.weight_decay, n->a.decoupled ? ", decoupled" : "");
  if (n->out) {
    fprintf(out, " : %s%s", gr_dtype_name[n->out->dtype], gr_shape_str(&n->out->shape, sb, sizeof sb));
    if (n->out->role == GR_ROLE_PARAM) fputs(n->out->trainable ? " trainable" : " frozen", out);
  }
  if (n->layer || n->loc.file) {
    fputs("    #", out);
    if (n->layer) fprintf(out, " %s", n->layer);
    if (n->loc.file) fprintf(out, " (%s:%d:%d)", n->loc.file, n->loc.line, n->loc.col);
  }
}

void gr_graph_dump(const gr_graph *g, FILE *out, const int64_t *plan_offsets) {
  for (int i = 0; i < g->n_nodes; i++) {
    const gr_node *n = g->nodes[i];
    gr_node_dump(n, out);
    if (plan_offsets && n->out && plan_offsets[n->out->id] >= 0)
      fprintf(out, "  @arena+%" PRId64, plan_offsets[n->out->id]);
    else if (n->out && n->out->slab_offset >= 0)
      fprintf(out, "  @slab+%" PRId64, n->out->slab_offset);
    fputc('\n', out);
  }
}

/* Graphviz: the nodes of one program, coloured by region: the frozen forward pass (grey), the part of
 * it computed once by the feature cache (in a blue cluster), the trained forward pass (white),
 * backward nodes (orange, dashed), updates (red); parameters as ellipses, trainable ones green. */
static const char *dot_colour(const gr_node *n) {
  if (gr_ops[n->op].flags & GR_OPF_UPD) return "#f4a6a6";
  if (n->backward) return "#ffd8a8";
  if (n->op == GR_OP_PARAM) return n->out->buffer ? "#e9ecef" : n->out->trainable ? "#b2f2bb" : "#ced4da";
  if (n->op == GR_OP_INPUT) return "#d0ebff";
  return NULL;
}

/* A name inside a DOT string: quotes and backslashes escaped. */
static void dot_str(const char *s, FILE *out) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', out);
    fputc(*s, out);
  }
}

void gr_graph_dot(const gr_graph *g, gr_node *const *nodes, int n_nodes, const bool *frozen, const bool *cached, FILE *out) {
  char sb[96];
  fprintf(out, "digraph graft {\n  rankdir=TB;\n  node [shape=box, style=filled, fillcolor=white, fontname=\"Helvetica\", fontsize=10];\n");
  bool any_cached = false;
  for (int pass = 0; pass < 2; pass++) { /* cached nodes inside a cluster, then the rest */
    if (pass == 0) {
      for (int i = 0; i < n_nodes; i++) any_cached |= cached && cached[nodes[i]->id];
      if (!any_cached) continue;
      fprintf(out, "  subgraph cluster_cache {\n    label=\"feature cache: computed once per sample\"; style=filled; color=\"#e7f5ff\";\n");
    }
    for (int i = 0; i < n_nodes; i++) {
      const gr_node *n = nodes[i];
      bool in_cache = cached && cached[n->id];
      if (in_cache != (pass == 0)) continue;
      const char *fill = dot_colour(n);
      if (!fill) fill = frozen && frozen[n->id] ? "#dee2e6" : "white";
      fprintf(out, "  %sn%d [label=\"", pass == 0 ? "  " : "", n->id);
      if (n->out && n->out->name && n->op != GR_OP_PARAM && n->op != GR_OP_INPUT) {
        dot_str(n->out->name, out);
        fputs("\\n", out);
      }
      if (n->op == GR_OP_PARAM || n->op == GR_OP_INPUT)
        dot_str(n->out->name ? n->out->name : "?", out);
      else
        fputs(gr_ops[n->op].name, out);
      if (n->out) fprintf(out, "\\n%s", gr_shape_str(&n->out->shape, sb, sizeof sb));
      if (n->layer && n->op != GR_OP_PARAM) {
        fputs("\\n(", out);
        dot_str(n->layer, out);
        fputc(')', out);
      }
      fprintf(out, "\", fillcolor=\"%s\"%s%s%s];\n", fill, n->op == GR_OP_PARAM || n->op == GR_OP_INPUT ? ", shape=ellipse" : "",
              n->backward ? ", style=\"filled,dashed\"" : "",
              n->op == GR_OP_CONV2D_BN ? ", peripheries=2, color=\"#862e9c\"" : ""); /* fused: two layers in one kernel */
    }
    if (pass == 0) fputs("  }\n", out);
  }
  for (int i = 0; i < n_nodes; i++) {
    const gr_node *n = nodes[i];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k]->def) fprintf(out, "  n%d -> n%d;\n", n->in[k]->def->id, n->id);
  }
  fputs("}\n", out);
  (void)g;
}
