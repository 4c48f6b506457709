/* fuse.c — fusion: nodes computed inside another node's kernel.
 *
 * Requires: a program (ordered nodes) after autodiff and the optimizer, before memplan.
 * Guarantees two kinds of fused kernel; `graft ir --after=fuse` shows both.
 *
 * Epilogues. Where a kernel's output is read by exactly one node of the program, that node is
 * elementwise (an ELEM op whose other operands have the output's shape, or bias_add, broadcasting a
 * per-channel bias) and the output is not kept, the reader becomes part of the producer's kernel: it
 * is applied to each element as the producer stores it, and the intermediate value is never written
 * to memory (memplan gives it no storage). The chain goes on while the same holds for the reader's
 * own output: conv2d + bias_add + relu is one kernel, batchnorm + add + relu (a residual block's end)
 * another, and the max-pooling gradient + relu_grad a third. A kernel can take an epilogue if its
 * code stores each output element once, as a value computed there (gr_fuse_anchor); codegen applies
 * the chain at that store. The anchor and its chain are placed at the chain's last node.
 *
 * Siblings. A kernel that already computes what another node needs computes that node's output too
 * (gr_fuse_siblings, `sibling` below): batchnorm's input gradient also writes its weight and bias
 * gradients, the cross-entropy loss also writes its gradient. Each sibling's output is stored. The
 * group is placed at its first node, which every input of each member must precede.
 *
 * A node moves only past nodes that do not read its output (an epilogue's intermediate has a single
 * reader, in the chain; siblings are placed before their outputs' readers) and never past an
 * optimizer update, so the program computes the same values. Fusion changes no arithmetic: the same
 * operations run in the same order, only without the round trips through memory, so results are
 * bit-identical to the unfused program. GRAFT_FUSE=0 in the environment turns the pass off (for
 * comparisons). */
#include "compiler/compiler.h"
#include <stdlib.h>
#include <string.h>

bool gr_fuse_siblings(const gr_node *n) {
  return (n->op == GR_OP_BATCHNORM_GRAD_INPUT && n->a.training) || n->op == GR_OP_SOFTMAX_CE;
}

/* Whether m is a sibling an anchor's kernel computes beside its own output: batchnorm's weight and
 * bias gradients beside its input gradient (the same x and dy, and sums the input gradient takes
 * anyway; bias_grad(dy) is dbeta whoever asked for it), and the cross-entropy's gradient beside the
 * loss (the same logits and labels, each row's max and sum of exponentials computed once). */
static bool sibling(const gr_node *an, const gr_node *m) {
  if (an->op == GR_OP_BATCHNORM_GRAD_INPUT)
    return (m->op == GR_OP_BATCHNORM_GRAD_GAMMA && m->in[0] == an->in[0] && m->in[1] == an->in[3] && m->a.training &&
            m->a.bn_eps == an->a.bn_eps) ||
           (m->op == GR_OP_BIAS_GRAD && m->in[0] == an->in[3]);
  return m->op == GR_OP_SOFTMAX_CE_GRAD && m->in[0] == an->in[0] && m->in[1] == an->in[1] && m->a.smoothing == an->a.smoothing;
}

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
  int *pos = gr_alloc(a, sizeof(int) * (size_t)(g->n_nodes + 1)); /* index in the program by node id; -1: not in it */
  for (int i = 0; i < g->n_nodes; i++) pos[i] = -1;
  for (int i = 0; i < nn; i++) pos[p->nodes[i]->id] = i;
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
      for (int j = 0; j < nn && len < 2; j++) {
        const gr_node *m = p->nodes[j];
        if (j == i || member[j] || n_mem[j] || !sibling(an, m) || upd_before[j] != upd_before[i]) continue;
        bool dup = false; /* one of each */
        for (int q = 0; q < len; q++) dup |= p->nodes[mem[q]]->op == m->op;
        if (!dup) mem[len++] = j;
      }
      if (!len) continue;
      place[i] = i; /* at the first of them: every input of each is made before it (or is a leaf) */
      for (int q = 0; q < len; q++) place[i] = mem[q] < place[i] ? mem[q] : place[i];
      bool ready = true;
      for (int q = -1; q < len; q++) {
        const gr_node *m = q < 0 ? an : p->nodes[mem[q]];
        for (int j = 0; j < m->n_in; j++) {
          const gr_node *d = gr_storage_root(m->in[j])->def;
          ready &= !d || gr_ops[d->op].kclass == GR_KC_NONE || (pos[d->id] >= 0 && pos[d->id] < place[i]);
        }
      }
      if (!ready) {
        len = 0;
        continue;
      }
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
