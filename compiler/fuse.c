/* fuse.c — fusion of elementwise epilogues into the kernel that makes their input.
 *
 * Requires: a program (ordered nodes) after autodiff and the optimizer, before memplan.
 * Guarantees: where a kernel's output is read by exactly one node of the program, that node is
 * elementwise (an ELEM op whose other operands have the output's shape, or bias_add, broadcasting a
 * per-channel bias) and the output is not kept, the reader becomes part of the producer's kernel: it
 * is applied to each element as the producer stores it, and the intermediate value is never
 * written to memory (memplan gives it no storage). The chain goes on while the same holds for the
 * reader's own output: conv2d + bias_add + relu is one kernel, batchnorm + add + relu (a residual
 * block's end) another, and the max-pooling gradient + relu_grad a third.
 *
 * A kernel can take an epilogue if its code stores each output element once, as a value computed
 * there (gr_fuse_anchor); codegen applies the chain at that store. The fused nodes are moved so that
 * the producer and its chain are adjacent, at the place of the chain's last node; a node moves later
 * only past nodes that do not read its output (it has a single reader, in the chain) and that change
 * nothing in place (no optimizer update lies between), so the program computes the same values.
 * Fusion changes no arithmetic: the same operations run in the same order, only without the
 * round trip through memory, so results are bit-identical to the unfused program.
 * GRAFT_FUSE=0 in the environment turns the pass off (for comparisons). */
#include "compiler/compiler.h"
#include <stdlib.h>
#include <string.h>

bool gr_fuse_siblings(const gr_node *n) { return n->op == GR_OP_BATCHNORM_GRAD_INPUT; }

bool gr_fuse_anchor(const gr_node *n) {
  if (!n->out || n->out->dtype == GR_I32) return false;
  switch (gr_ops[n->op].kclass) {
  case GR_KC_ELEM: return true;
  case GR_KC_CUSTOM: break;
  default: return false;
  }
  switch (n->op) {
  case GR_OP_BIAS_ADD:
  case GR_OP_BATCHNORM:
  case GR_OP_CONV2D:
  case GR_OP_CONV2D_BN: return true;
  case GR_OP_MAXPOOL2D_GRAD: return true; /* tiling windows: as it writes dx; else in place after */
  default: return false;
  }
}

/* Whether node m can be applied elementwise to v, its input `slot`, as an epilogue. */
static bool chainable(const gr_node *m, const gr_value *v, int *slot) {
  if (!m->out || !gr_shape_eq(&m->out->shape, &v->shape) || m->out->dtype != v->dtype) return false;
  int at = -1;
  for (int k = 0; k < m->n_in; k++)
    if (m->in[k] == v) {
      if (at >= 0) return false; /* read twice (x * x): keep it simple */
      at = k;
    }
  if (at < 0) return false;
  *slot = at;
  if (m->op == GR_OP_BIAS_ADD) return at == 0 && v->shape.rank >= 2;
  if (gr_ops[m->op].kclass != GR_KC_ELEM) return false;
  for (int k = 0; k < m->n_in; k++) /* no broadcast operands: each is read at the element's own index */
    if (k != at && !gr_shape_eq(&m->in[k]->shape, &v->shape)) return false;
  return true;
}

static bool fuse_disabled(void) {
  const char *e = getenv("GRAFT_FUSE");
  return e && !strcmp(e, "0");
}

void gr_fuse_program(const gr_graph *g, gr_program *p) {
  gr_arena *a = g->arena;
  int nn = p->n_nodes;
  p->chain = gr_alloc(a, sizeof(int) * (size_t)(g->n_nodes + 1));
  p->in_chain = gr_alloc(a, (size_t)(g->n_nodes + 1));
  p->unstored = gr_alloc(a, (size_t)(g->n_values + 1));
  if (fuse_disabled()) return;
  /* readers of each storage root in this program, and the node index of the (last) reader */
  int *readers = gr_alloc(a, sizeof(int) * (size_t)g->n_values), *reader = gr_alloc(a, sizeof(int) * (size_t)g->n_values);
  bool *kept = gr_alloc(a, (size_t)g->n_values);
  for (int i = 0; i < nn; i++) {
    const gr_node *n = p->nodes[i];
    for (int k = 0; k < n->n_in; k++) {
      int r = gr_storage_root(n->in[k])->id;
      readers[r]++;
      reader[r] = i;
    }
  }
  for (int k = 0; k < p->n_keep; k++) kept[gr_storage_root(p->keep[k])->id] = true;
  int *upd_before = gr_alloc(a, sizeof(int) * (size_t)(nn + 1)); /* update nodes among nodes[0, i) */
  for (int i = 0; i < nn; i++) upd_before[i + 1] = upd_before[i] + !!(gr_ops[p->nodes[i]->op].flags & GR_OPF_UPD);
  /* groups: an anchor and the nodes its kernel also runs (members, in order), placed at `place` */
  int *members = gr_alloc(a, sizeof(int) * (size_t)(nn + 1) * (GR_FUSE_MAX + 1));
  int *n_mem = gr_alloc(a, sizeof(int) * (size_t)(nn + 1)), *place = gr_alloc(a, sizeof(int) * (size_t)(nn + 1));
  int *group_at = gr_alloc(a, sizeof(int) * (size_t)(nn + 1)); /* by place: the anchor's index; -1: none */
  bool *member = gr_alloc(a, (size_t)(nn + 1));
  for (int i = 0; i < nn; i++) group_at[i] = -1;
  for (int i = 0; i < nn; i++) {
    gr_node *an = p->nodes[i];
    int *mem = members + (size_t)i * (GR_FUSE_MAX + 1), len = 0;
    if (member[i]) continue;
    if (gr_fuse_siblings(an)) {
      /* batchnorm's weight and bias gradients beside its input gradient: the same x and dy, and
       * sums the input gradient computes anyway (bias_grad(dy) is dbeta whoever asked for it) */
      if (!an->a.training) continue;
      for (int j = 0; j < nn && len < 2; j++) {
        const gr_node *m = p->nodes[j];
        bool gamma = m->op == GR_OP_BATCHNORM_GRAD_GAMMA && m->in[0] == an->in[0] && m->in[1] == an->in[3] && m->a.training &&
                     m->a.bn_eps == an->a.bn_eps;
        bool beta = m->op == GR_OP_BIAS_GRAD && m->in[0] == an->in[3];
        if ((gamma || beta) && !member[j] && upd_before[j] == upd_before[i]) {
          bool dup = false; /* one of each */
          for (int q = 0; q < len; q++) dup |= p->nodes[mem[q]]->op == m->op;
          if (!dup) mem[len++] = j;
        }
      }
      if (!len) continue;
      place[i] = i;
      for (int q = 0; q < len; q++) place[i] = mem[q] < place[i] ? mem[q] : place[i];
    } else if (gr_fuse_anchor(an)) {
      const gr_value *v = an->out;
      int ptrs = 0;
      for (;;) {
        if (v->role != GR_ROLE_TEMP || kept[v->id] || readers[v->id] != 1) break;
        int j = reader[v->id], slot;
        gr_node *m = p->nodes[j];
        if (member[j] || !chainable(m, v, &slot) || len == GR_FUSE_MAX || ptrs + m->n_in - 1 > GR_FUSE_MAX_OPERANDS) break;
        if (upd_before[j] != upd_before[i]) break; /* would move the producer past an update */
        ptrs += m->n_in - 1;
        mem[len++] = j;
        v = m->out;
      }
      if (!len) continue;
      place[i] = mem[len - 1]; /* at the chain's last node: its other operands are computed by then */
      for (int q = 0; q < len - 1; q++) p->unstored[p->nodes[mem[q]]->out->id] = true;
      p->unstored[an->out->id] = true;
    } else {
      continue;
    }
    for (int q = 0; q < len; q++) {
      member[mem[q]] = true;
      p->in_chain[p->nodes[mem[q]]->id] = true;
    }
    n_mem[i] = len;
    p->chain[an->id] = len;
    group_at[place[i]] = i;
  }
  /* the new order: each group at its place, the anchor first */
  gr_node **order = gr_alloc(a, sizeof(gr_node *) * (size_t)(nn + 1));
  int k = 0;
  for (int i = 0; i < nn; i++) {
    if (group_at[i] >= 0) {
      int s = group_at[i];
      order[k++] = p->nodes[s];
      for (int q = 0; q < n_mem[s]; q++) order[k++] = p->nodes[members[(size_t)s * (GR_FUSE_MAX + 1) + q]];
    } else if (!member[i] && !n_mem[i]) {
      order[k++] = p->nodes[i];
    }
  }
  GR_CHECK(k == nn, "fusion lost nodes (%d of %d)", k, nn);
  memcpy(p->nodes, order, sizeof(gr_node *) * (size_t)nn);
}

int gr_program_kernels(const gr_program *p, int *fused) {
  int kernels = 0, f = 0;
  for (int i = 0; i < p->n_nodes; i++) {
    const gr_node *n = p->nodes[i];
    gr_kclass kc = gr_ops[n->op].kclass;
    if (kc == GR_KC_NONE || kc == GR_KC_VIEW) continue;
    if (p->in_chain && p->in_chain[n->id])
      f++;
    else
      kernels++;
  }
  if (fused) *fused = f;
  return kernels;
}
