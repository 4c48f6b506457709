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
 * until its last node. Blocks are 64-byte aligned and placed largest first (see `place`). */
#include "compiler/compiler.h"
#include <stdlib.h>
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

/* Arena blocks are planned in two steps. The walk over the program (gr_plan_arena) asks for blocks
 * and gives them back in execution order, which fixes each block's lifetime: from the event that
 * asks for it to the event that gives it back (a counter; never given back: to the end). Then the
 * blocks are placed (place). Placing them only in execution order, first-fit, left holes the peak
 * could not reuse: ResNet-18's 224x224 training arena was 422 MB for 372 MB alive at once; largest
 * first it is 373 MB. */
typedef struct block {
  int64_t size, start, end, off;
} block;

typedef struct allocator {
  block *b;
  int n, cap;
  int64_t clock;
  gr_arena *arena;
} allocator;

/* A block of `size` bytes, alive from now: returns its number (its offset comes from place()). */
static int64_t alloc_block(allocator *al, int64_t size) {
  gr_grow(al->arena, (void **)&al->b, &al->cap, al->n + 1, sizeof(block));
  al->b[al->n] = (block){size, al->clock++, INT64_MAX, -1};
  return al->n++;
}

/* Block `id` is dead from now on (if it was not already). */
static void free_block(allocator *al, int64_t id) {
  GR_ASSERT(id >= 0 && id < al->n);
  if (al->b[id].end == INT64_MAX) al->b[id].end = al->clock++;
}

static int by_size(const void *x, const void *y) {
  const block *a = *(const block *const *)x, *b = *(const block *const *)y;
  if (a->size != b->size) return a->size < b->size ? 1 : -1;
  return a->start < b->start ? -1 : a->start > b->start;
}
static int by_offset(const void *x, const void *y) {
  const block *a = *(const block *const *)x, *b = *(const block *const *)y;
  return a->off < b->off ? -1 : a->off > b->off;
}

static int by_start(const void *x, const void *y) {
  const block *a = *(const block *const *)x, *b = *(const block *const *)y;
  return a->start < b->start ? -1 : a->start > b->start;
}

/* Offsets for every block, taken in the order `cmp` gives, each at the lowest offset where it
 * overlaps no block placed before it that is alive at the same time; returns the arena's size. */
static int64_t place_in_order(allocator *al, int (*cmp)(const void *, const void *)) {
  block **order = gr_alloc(al->arena, sizeof(block *) * (size_t)(al->n + 1));
  block **near = gr_alloc(al->arena, sizeof(block *) * (size_t)(al->n + 1));
  for (int i = 0; i < al->n; i++) order[i] = &al->b[i];
  qsort(order, (size_t)al->n, sizeof *order, cmp);
  int64_t top = 0;
  for (int i = 0; i < al->n; i++) {
    block *b = order[i];
    int k = 0;
    for (int j = 0; j < i; j++) /* placed blocks alive at the same time */
      if (order[j]->start < b->end && b->start < order[j]->end) near[k++] = order[j];
    qsort(near, (size_t)k, sizeof *near, by_offset);
    int64_t off = 0;
    for (int j = 0; j < k && near[j]->off < off + b->size; j++)
      if (near[j]->off + near[j]->size > off) off = near[j]->off + near[j]->size;
    b->off = off;
    if (off + b->size > top) top = off + b->size;
  }
  return top;
}

/* The smaller of two placements: largest block first (TFLite's greedy by size), and in execution
 * order (first-fit as the blocks come, which is what this planner did before and sometimes packs
 * tighter). Returns the arena's size. */
static int64_t place(allocator *al) {
  int64_t first = place_in_order(al, by_start);
  int64_t *keep = gr_alloc(al->arena, sizeof(int64_t) * (size_t)(al->n + 1));
  for (int i = 0; i < al->n; i++) keep[i] = al->b[i].off;
  int64_t largest = place_in_order(al, by_size);
  if (largest <= first) return largest;
  for (int i = 0; i < al->n; i++) al->b[i].off = keep[i];
  return first;
}

static int64_t value_block(allocator *al, const gr_value *v, int64_t max_batch) {
  return alloc_block(al, align_up(gr_value_bytes(v, max_batch)));
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
    if (n->op == GR_OP_INPUT && used[n->out->id]) p->offsets[n->out->id] = value_block(&al, n->out, max_batch);
    for (int k = 0; k < n->n_in; k++) {
      const gr_value *r = gr_storage_root(n->in[k]);
      if (r->def && !in_prog[r->def->id] && in_arena(r) && p->offsets[r->id] < 0)
        p->offsets[r->id] = value_block(&al, r, max_batch);
    }
  }
  p->scratch = gr_alloc(a, sizeof(int64_t) * (size_t)g->n_nodes);
  for (int i = 0; i < g->n_nodes; i++) p->scratch[i] = -1;
  for (int s = 0; s < nn; s = step_end[s] + 1) {
    int e = step_end[s];
    for (int i = s; i <= e; i++) {
      const gr_node *n = p->nodes[i];
      if (n->out && n->op != GR_OP_INPUT && gr_storage_root(n->out) == n->out && in_arena(n->out) && !(p->unstored && p->unstored[n->out->id]))
        p->offsets[n->out->id] = value_block(&al, n->out, max_batch);
    }
    /* scratch lives only while the kernel runs */
    for (int i = s; i <= e; i++) {
      const gr_node *n = p->nodes[i];
      int64_t sb = align_up(gr_scratch_elems(n, max_batch) * gr_dtype_size[g->fdtype]);
      if (sb > 0) p->scratch[n->id] = alloc_block(&al, sb);
    }
    for (int i = s; i <= e; i++)
      if (p->scratch[p->nodes[i]->id] >= 0) free_block(&al, p->scratch[p->nodes[i]->id]);
    /* release what dies here (a root read twice is given back once: free_block) */
    for (int i = s; i <= e; i++) {
      const gr_node *n = p->nodes[i];
      for (int k = 0; k < n->n_in; k++) {
        const gr_value *r = gr_storage_root(n->in[k]);
        if (last[r->id] == e && in_arena(r) && p->offsets[r->id] >= 0) free_block(&al, p->offsets[r->id]);
      }
    }
    /* an output nobody reads dies at once */
    for (int i = s; i <= e; i++) {
      const gr_node *n = p->nodes[i];
      if (n->out && gr_storage_root(n->out) == n->out && last[n->out->id] < 0 && p->offsets[n->out->id] >= 0)
        free_block(&al, p->offsets[n->out->id]);
    }
  }
  /* block numbers to offsets */
  int64_t top = place(&al);
  for (int i = 0; i < nv; i++)
    if (p->offsets[i] >= 0) p->offsets[i] = al.b[p->offsets[i]].off;
  for (int i = 0; i < g->n_nodes; i++)
    if (p->scratch[i] >= 0) p->scratch[i] = al.b[p->scratch[i]].off;
  /* views take their root's offset */
  for (int i = 0; i < nn; i++) {
    const gr_node *n = p->nodes[i];
    if (n->out && gr_storage_root(n->out) != n->out) p->offsets[n->out->id] = p->offsets[gr_storage_root(n->out)->id];
  }
  p->arena_bytes = top > 0 ? top : ALIGN;
}
