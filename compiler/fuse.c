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
  case GR_OP_MAXPOOL2D_GRAD: return gr_pool_tiles(&n->a);
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
  int *end = gr_alloc(a, sizeof(int) * (size_t)(nn + 1)); /* index of the chain's last node, by anchor index; -1: none */
  bool *member = gr_alloc(a, (size_t)(nn + 1));
  for (int i = 0; i < nn; i++) end[i] = -1;
  for (int i = 0; i < nn; i++) {
    gr_node *an = p->nodes[i];
    if (member[i] || !gr_fuse_anchor(an)) continue;
    const gr_value *v = an->out;
    int last = i, len = 0, ptrs = 0;
    for (;;) {
      if (v->role != GR_ROLE_TEMP || kept[v->id] || readers[v->id] != 1) break;
      int j = reader[v->id], slot;
      gr_node *m = p->nodes[j];
      if (member[j] || !chainable(m, v, &slot) || len == GR_FUSE_MAX || ptrs + m->n_in - 1 > GR_FUSE_MAX_OPERANDS) break;
      if (upd_before[j] != upd_before[i]) break; /* would move the producer past an update */
      member[j] = true;
      ptrs += m->n_in - 1;
      len++;
      last = j;
      v = m->out;
    }
    if (!len) continue;
    end[i] = last;
    p->chain[an->id] = len;
  }
  /* the new order: each anchor and its chain at the place of the chain's last node */
  gr_node **order = gr_alloc(a, sizeof(gr_node *) * (size_t)(nn + 1));
  int *anchor_at_end = gr_alloc(a, sizeof(int) * (size_t)(nn + 1));
  for (int i = 0; i < nn; i++) anchor_at_end[i] = -1;
  for (int i = 0; i < nn; i++)
    if (end[i] >= 0) anchor_at_end[end[i]] = i;
  int k = 0;
  for (int i = 0; i < nn; i++) {
    if (end[i] >= 0 || member[i]) {
      if (anchor_at_end[i] < 0) continue; /* placed with its chain's last node */
      int s = anchor_at_end[i];
      gr_node *an = p->nodes[s];
      order[k++] = an;
      const gr_value *v = an->out;
      for (int c = 0; c < p->chain[an->id]; c++) {
        p->unstored[v->id] = true;
        gr_node *m = p->nodes[reader[v->id]];
        p->in_chain[m->id] = true;
        order[k++] = m;
        v = m->out;
      }
      continue;
    }
    order[k++] = p->nodes[i];
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
