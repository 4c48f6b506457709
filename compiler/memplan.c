/* memplan.c — memory planning.
 *
 * Requires: a program (ordered nodes) whose shapes are known, and the maximum batch size.
 * Guarantees: parameters and optimizer state get fixed offsets in one persistent slab (parameters
 * first, in graph order, then state: one contiguous block each, so updates and checkpoints walk them
 * in one loop). Every other value the program touches gets an offset in the program's arena, sized
 * for max_batch, such that no two values live at the same time overlap; a value is live from the
 * node that makes it to its last use (inputs from the start, kept values to the end). A view (reshape)
 * shares its input's storage. A node's scratch memory (conv2d's im2col buffer) lives only while it
 * runs. A fused kernel (fuse.c) is one step: values inside it get no storage, and what it reads lives
 * until its last node. Allocation is first-fit over a sorted free list, 64-byte aligned. */
#include "compiler/compiler.h"
#include <string.h>

enum { ALIGN = 64 };

static int64_t align_up(int64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

const gr_value *gr_storage_root(const gr_value *v) {
  while (v->def && gr_ops[v->def->op].kclass == GR_KC_VIEW) v = v->def->in[0];
  return v;
}

int64_t gr_value_bytes(const gr_value *v, int64_t batch) {
  return gr_shape_numel(&v->shape, batch) * gr_dtype_size[v->dtype];
}

int64_t gr_plan_slab(gr_graph *g) {
  int64_t off = 0;
  for (int pass = 0; pass < 2; pass++) {
    gr_role want = pass == 0 ? GR_ROLE_PARAM : GR_ROLE_STATE;
    for (int i = 0; i < g->n_values; i++) {
      gr_value *v = g->values[i];
      if (v->role != want) continue;
      v->slab_offset = off;
      off = align_up(off + gr_value_bytes(v, 1));
    }
  }
  return off;
}

typedef struct block {
  int64_t off, size;
} block;

typedef struct allocator {
  block *free;
  int n, cap;
  int64_t top;
  gr_arena *arena;
} allocator;

static int64_t alloc_block(allocator *al, int64_t size) {
  for (int i = 0; i < al->n; i++) {
    if (al->free[i].size < size) continue;
    int64_t off = al->free[i].off;
    al->free[i].off += size;
    al->free[i].size -= size;
    if (al->free[i].size == 0) {
      memmove(&al->free[i], &al->free[i + 1], sizeof(block) * (size_t)(al->n - i - 1));
      al->n--;
    }
    return off;
  }
  /* grow at the top, absorbing a free block that ends there */
  if (al->n && al->free[al->n - 1].off + al->free[al->n - 1].size == al->top) {
    int64_t off = al->free[al->n - 1].off;
    al->n--;
    al->top = off + size;
    return off;
  }
  int64_t off = al->top;
  al->top += size;
  return off;
}

static void free_block(allocator *al, int64_t off, int64_t size) {
  int i = 0;
  while (i < al->n && al->free[i].off < off) i++;
  gr_grow(al->arena, (void **)&al->free, &al->cap, al->n + 1, sizeof(block));
  memmove(&al->free[i + 1], &al->free[i], sizeof(block) * (size_t)(al->n - i));
  al->free[i] = (block){off, size};
  al->n++;
  /* merge with neighbours */
  if (i + 1 < al->n && al->free[i].off + al->free[i].size == al->free[i + 1].off) {
    al->free[i].size += al->free[i + 1].size;
    memmove(&al->free[i + 1], &al->free[i + 2], sizeof(block) * (size_t)(al->n - i - 2));
    al->n--;
  }
  if (i > 0 && al->free[i - 1].off + al->free[i - 1].size == al->free[i].off) {
    al->free[i - 1].size += al->free[i].size;
    memmove(&al->free[i], &al->free[i + 1], sizeof(block) * (size_t)(al->n - i - 1));
    al->n--;
  }
}

static bool in_arena(const gr_value *root) { return root->role == GR_ROLE_TEMP || root->role == GR_ROLE_INPUT; }

void gr_plan_arena(const gr_graph *g, gr_program *p, int64_t max_batch) {
  gr_arena *a = g->arena;
  int nv = g->n_values, nn = p->n_nodes;
  /* a fused kernel (an anchor and its epilogue, adjacent: fuse.c) runs as one step, at its last node:
   * its inputs live until then, and its outputs and scratch must not overlap any of them */
  int *step_end = gr_alloc(a, sizeof(int) * (size_t)(nn + 1));
  for (int i = 0; i < nn; i++) {
    int len = p->chain ? p->chain[p->nodes[i]->id] : 0;
    for (int j = i; j <= i + len; j++) step_end[j] = i + len;
    i += len;
  }
  int *last = gr_alloc(a, sizeof(int) * (size_t)nv);
  bool *used = gr_alloc(a, (size_t)nv);
  for (int i = 0; i < nv; i++) last[i] = -1;
  for (int i = 0; i < nn; i++) {
    const gr_node *n = p->nodes[i];
    for (int k = 0; k < n->n_in; k++) {
      int r = gr_storage_root(n->in[k])->id;
      last[r] = step_end[i];
      used[r] = true;
    }
    if (n->out) used[gr_storage_root(n->out)->id] = true;
  }
  for (int k = 0; k < p->n_keep; k++) last[gr_storage_root(p->keep[k])->id] = nn;
  p->offsets = gr_alloc(a, sizeof(int64_t) * (size_t)nv);
  for (int i = 0; i < nv; i++) p->offsets[i] = -1;
  allocator al = {.arena = a};
  /* inputs first: the runtime writes them before the step; so it does values the program reads but
   * does not compute (a feature cache's cut) */
  bool *in_prog = gr_alloc(a, (size_t)g->n_nodes);
  for (int i = 0; i < nn; i++) in_prog[p->nodes[i]->id] = true;
  for (int i = 0; i < nn; i++) {
    const gr_node *n = p->nodes[i];
    if (n->op == GR_OP_INPUT && used[n->out->id]) p->offsets[n->out->id] = alloc_block(&al, align_up(gr_value_bytes(n->out, max_batch)));
    for (int k = 0; k < n->n_in; k++) {
      const gr_value *r = gr_storage_root(n->in[k]);
      if (r->def && !in_prog[r->def->id] && in_arena(r) && p->offsets[r->id] < 0)
        p->offsets[r->id] = alloc_block(&al, align_up(gr_value_bytes(r, max_batch)));
    }
  }
  p->scratch = gr_alloc(a, sizeof(int64_t) * (size_t)g->n_nodes);
  for (int i = 0; i < g->n_nodes; i++) p->scratch[i] = -1;
  bool *freed = gr_alloc(a, (size_t)nv);
  for (int s = 0; s < nn; s = step_end[s] + 1) {
    int e = step_end[s];
    for (int i = s; i <= e; i++) {
      const gr_node *n = p->nodes[i];
      if (n->out && n->op != GR_OP_INPUT && gr_storage_root(n->out) == n->out && in_arena(n->out) && !(p->unstored && p->unstored[n->out->id]))
        p->offsets[n->out->id] = alloc_block(&al, align_up(gr_value_bytes(n->out, max_batch)));
    }
    /* scratch lives only while the kernel runs */
    for (int i = s; i <= e; i++) {
      const gr_node *n = p->nodes[i];
      int64_t sb = align_up(gr_scratch_elems(n, max_batch) * gr_dtype_size[g->fdtype]);
      if (sb > 0) p->scratch[n->id] = alloc_block(&al, sb);
    }
    for (int i = s; i <= e; i++) {
      const gr_node *n = p->nodes[i];
      int64_t sb = align_up(gr_scratch_elems(n, max_batch) * gr_dtype_size[g->fdtype]);
      if (sb > 0) free_block(&al, p->scratch[n->id], sb);
    }
    /* release what dies here: each storage root once */
    for (int i = s; i <= e; i++) {
      const gr_node *n = p->nodes[i];
      for (int k = 0; k < n->n_in; k++) {
        const gr_value *r = gr_storage_root(n->in[k]);
        if (last[r->id] != e || !in_arena(r) || p->offsets[r->id] < 0 || freed[r->id]) continue;
        freed[r->id] = true;
        free_block(&al, p->offsets[r->id], align_up(gr_value_bytes(r, max_batch)));
      }
    }
    /* an output nobody reads dies at once */
    for (int i = s; i <= e; i++) {
      const gr_node *n = p->nodes[i];
      if (n->out && gr_storage_root(n->out) == n->out && last[n->out->id] < 0 && p->offsets[n->out->id] >= 0 && !freed[n->out->id]) {
        freed[n->out->id] = true;
        free_block(&al, p->offsets[n->out->id], align_up(gr_value_bytes(n->out, max_batch)));
      }
    }
  }
  /* views take their root's offset */
  for (int i = 0; i < nn; i++) {
    const gr_node *n = p->nodes[i];
    if (n->out && gr_storage_root(n->out) != n->out) p->offsets[n->out->id] = p->offsets[gr_storage_root(n->out)->id];
  }
  p->arena_bytes = al.top > 0 ? al.top : ALIGN;
}
