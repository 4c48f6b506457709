/* test_gradcheck.c — finite-difference gradient checks driven by the op table.
 *
 * One cmocka test per op in ir/ops.def. A differentiable op is built on random float64 inputs, the
 * graph is differentiated by the autodiff pass, compiled by the real LLVM codegen and JIT, and every
 * gradient element is compared with a central difference of L = sum(y * r) for a random r:
 *   |analytic - numeric| <= 1e-6 * max(1, |analytic|, |numeric|).
 * Backward-only ops (flag BWD) are covered by the checks whose backward graphs use them; optimizer
 * updates (flag UPD) are compared against a C transcription of torch.optim's SGD, Adam and AdamW.
 * The last test fails if any op in the table was not covered — so a new op without a check fails
 * the suite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "compiler/compiler.h"

enum { NB = 3 }; /* the run-time batch size N used by every check */

static bool covered[GR_OP_COUNT];
static int fused_nodes; /* nodes the checked programs ran inside another node's kernel (fuse.c) */
/* The run-time scalars of every check: a fixed dropout seed makes dropout a fixed linear map. */
static float step_scalars[GR_SCALAR_COUNT] = {[GR_SCALAR_SEED] = 12345};
static uint64_t rng_state = 0x12345678;

static double urand(void) { /* [-1, 1) */
  rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(rng_state >> 11) * 0x1.0p-52 - 1.0;
}

typedef struct gc {
  gr_arena arena;
  gr_diag diag;
  gr_graph *g;
  gr_value *leaves[4];
  int n_leaves;
  gr_value *labels;
  int64_t classes;
  gr_value *ids;   /* embedding indices, filled with a pattern that repeats indices */
  int64_t vocab;
  double away_from_zero; /* keep leaf values at least this far from 0 (kinks) */
  gr_value *fixed[8];    /* non-differentiable operands (buffers), set to U(lo, lo + 1) */
  double fixed_lo[8];
  int n_fixed;
  bool ignore_some;      /* cross-entropy: every third label is -1 (an ignored row) */
  double reversal;       /* != 0: the graph reverses gradients, analytic = reversal * numeric (-lambda) */
} gc;

static void gc_init(gc *c) {
  memset(c, 0, sizeof *c);
  gr_arena_init(&c->arena);
  gr_diag_init(&c->diag);
  c->g = gr_graph_new(&c->arena, &c->diag, GR_F64);
}

static void gc_free(gc *c) {
  gr_arena_free(&c->arena);
  gr_diag_free(&c->diag);
}

static gr_shape S(int rank, ...) {
  va_list ap;
  va_start(ap, rank);
  gr_shape s = {.rank = rank};
  for (int i = 0; i < rank; i++) s.dim[i] = va_arg(ap, int64_t);
  va_end(ap);
  return s;
}
#define N ((int64_t)GR_BATCH)
#define D(x) ((int64_t)(x))

/* A leaf that receives a gradient: an input if it has a batch dimension, a parameter otherwise. */
static gr_value *leaf(gc *c, gr_shape s) {
  char name[16];
  snprintf(name, sizeof name, "x%d", c->n_leaves);
  gr_value *v = gr_shape_has_batch(&s) ? gr_input(c->g, name, GR_F64, s, (gr_loc){0}) : gr_param(c->g, name, s, 0, (gr_loc){0});
  v->trainable = true;
  c->leaves[c->n_leaves++] = v;
  return v;
}

static gr_value *labels(gc *c, int64_t classes) {
  c->labels = gr_input(c->g, "labels", GR_I32, S(1, N), (gr_loc){0});
  c->classes = classes;
  return c->labels;
}

static void *storage(const gr_program *p, uint8_t *slab, uint8_t *arena, const gr_value *v) {
  const gr_value *r = gr_storage_root(v);
  if (r->role == GR_ROLE_PARAM || r->role == GR_ROLE_STATE) return slab + r->slab_offset;
  assert_true(p->offsets[r->id] >= 0);
  return arena + p->offsets[r->id];
}

static double weighted_sum(const double *y, const double *r, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += y[i] * r[i];
  return s;
}

/* A graph compiled into one program over all its nodes, with its memory. */
typedef struct compiled {
  gr_program p;
  gr_jit *jit;
  uint8_t *slab, *arena;
} compiled;

/* Fuses epilogues (so the fused kernels are checked too) and plans memory for all of c's graph
 * (keeping `keep` to the end) at batch NB, JIT-compiles it and allocates zeroed slab and arena. */
static void compile_graph(gc *c, const char *name, gr_value **keep, int nk, compiled *k) {
  gr_graph *g = c->g;
  gr_node **nodes = gr_alloc(g->arena, sizeof(gr_node *) * (size_t)g->n_nodes); /* fusion reorders them */
  memcpy(nodes, g->nodes, sizeof(gr_node *) * (size_t)g->n_nodes);
  k->p = (gr_program){.name = name, .nodes = nodes, .n_nodes = g->n_nodes, .keep = keep, .n_keep = nk};
  gr_fuse_program(g, &k->p);
  int fused;
  gr_program_kernels(&k->p, &fused);
  fused_nodes += fused;
  int64_t slab_bytes = gr_plan_slab(g);
  gr_plan_arena(g, &k->p, NB);
  k->jit = gr_jit_compile(g, &k->p, 1, &(gr_codegen_opts){0}, &c->diag);
  assert_non_null(k->jit);
  k->slab = calloc(1, (size_t)slab_bytes + 64);
  k->arena = calloc(1, (size_t)k->p.arena_bytes + 64);
}

static void compiled_free(compiled *k) {
  free(k->slab);
  free(k->arena);
  gr_jit_free(k->jit);
}

/* Differentiates y, compiles, and compares every gradient element with central differences. */
static void gc_check(gc *c, gr_value *y) {
  gr_graph *g = c->g;
  assert_non_null(y);
  assert_int_equal(c->diag.n_errors, 0);
  gr_value *dy = gr_input(g, "dy", GR_F64, y->shape, (gr_loc){0});
  assert_true(gr_autodiff(g, y, dy));
  for (int i = 0; i < g->n_nodes; i++) covered[g->nodes[i]->op] = true;
  gr_value *keep[16];
  int nk = 0;
  keep[nk++] = y;
  keep[nk++] = dy;
  for (int i = 0; i < c->n_leaves; i++) {
    assert_non_null(c->leaves[i]->grad);
    keep[nk++] = c->leaves[i];
    keep[nk++] = c->leaves[i]->grad;
  }
  if (c->labels) keep[nk++] = c->labels;
  if (c->ids) keep[nk++] = c->ids;
  for (int i = 0; i < c->n_fixed; i++) keep[nk++] = c->fixed[i];
  compiled cp;
  compile_graph(c, "gradcheck", keep, nk, &cp);
  gr_program p = cp.p;
  uint8_t *slab = cp.slab, *arena = cp.arena;
  /* random leaves, labels and output weights r */
  for (int i = 0; i < c->n_leaves; i++) {
    double *x = storage(&p, slab, arena, c->leaves[i]);
    for (int64_t k = 0; k < gr_shape_numel(&c->leaves[i]->shape, NB); k++) {
      double v = urand();
      if (fabs(v) < c->away_from_zero) v = v < 0 ? -c->away_from_zero : c->away_from_zero;
      x[k] = v;
    }
  }
  for (int i = 0; i < c->n_fixed; i++) {
    double *x = storage(&p, slab, arena, c->fixed[i]);
    for (int64_t k = 0; k < gr_shape_numel(&c->fixed[i]->shape, NB); k++) x[k] = c->fixed_lo[i] + (urand() + 1) / 2;
  }
  if (c->labels) {
    int32_t *t = storage(&p, slab, arena, c->labels);
    for (int k = 0; k < NB; k++) t[k] = c->ignore_some && k % 3 == 1 ? -1 : (int32_t)((k * 7 + 3) % c->classes);
  }
  if (c->ids) {
    int32_t *t = storage(&p, slab, arena, c->ids);
    for (int64_t k = 0; k < gr_shape_numel(&c->ids->shape, NB); k++) t[k] = (int32_t)((k * 5 + 1) % c->vocab);
  }
  int64_t ny = gr_shape_numel(&y->shape, NB);
  double *r = malloc(sizeof(double) * (size_t)ny);
  for (int64_t k = 0; k < ny; k++) r[k] = urand();
  double *dyp = storage(&p, slab, arena, dy), *yp = storage(&p, slab, arena, y);
  memcpy(dyp, r, sizeof(double) * (size_t)ny);
  p.fn(slab, arena, NB, step_scalars);
  /* every analytic gradient, before the finite-difference runs below overwrite them */
  double *analytics[4];
  for (int i = 0; i < c->n_leaves; i++) {
    size_t bytes = sizeof(double) * (size_t)gr_shape_numel(&c->leaves[i]->shape, NB);
    analytics[i] = malloc(bytes);
    memcpy(analytics[i], storage(&p, slab, arena, c->leaves[i]->grad), bytes);
  }
  const double eps = 1e-6;
  for (int i = 0; i < c->n_leaves; i++) {
    const gr_value *v = c->leaves[i];
    int64_t nx = gr_shape_numel(&v->shape, NB);
    double *x = storage(&p, slab, arena, v), *analytic = analytics[i];
    for (int64_t k = 0; k < nx; k++) {
      double x0 = x[k];
      x[k] = x0 + eps;
      memcpy(dyp, r, sizeof(double) * (size_t)ny);
      p.fn(slab, arena, NB, step_scalars);
      double lp = weighted_sum(yp, r, ny);
      x[k] = x0 - eps;
      memcpy(dyp, r, sizeof(double) * (size_t)ny);
      p.fn(slab, arena, NB, step_scalars);
      double lm = weighted_sum(yp, r, ny);
      x[k] = x0;
      double numeric = (lp - lm) / (2 * eps) * (c->reversal != 0 ? c->reversal : 1);
      double scale = fmax(1.0, fmax(fabs(numeric), fabs(analytic[k])));
      if (fabs(numeric - analytic[k]) > 1e-6 * scale)
        fail_msg("d/d%s[%lld]: analytic %.10g, numeric %.10g", v->name, (long long)k, analytic[k], numeric);
    }
    free(analytic);
  }
  free(r);
  compiled_free(&cp);
}

/* ---- one builder per differentiable op -------------------------------------------------------- */

static void check_matmul(void) {
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      gc c;
      gc_init(&c);
      gr_value *a = leaf(&c, ta ? S(2, D(4), D(3)) : S(2, D(3), D(4)));
      gr_value *b = leaf(&c, tb ? S(2, D(5), D(4)) : S(2, D(4), D(5)));
      gc_check(&c, gr_matmul(c.g, a, b, ta, tb, (gr_loc){0}));
      gc_free(&c);
    }
  /* batch rows: x [N, 4] W^T, as a linear layer does; and K = N, as its weight gradient does */
  gc c;
  gc_init(&c);
  gc_check(&c, gr_matmul(c.g, leaf(&c, S(2, N, D(4))), leaf(&c, S(2, D(5), D(4))), 0, 1, (gr_loc){0}));
  gc_free(&c);
  gc_init(&c);
  gc_check(&c, gr_matmul(c.g, leaf(&c, S(2, N, D(3))), leaf(&c, S(2, N, D(4))), 1, 0, (gr_loc){0}));
  gc_free(&c);
}

static void check_unary(gr_op op, double away) {
  gc c;
  gc_init(&c);
  c.away_from_zero = away;
  gc_check(&c, gr_unary(c.g, op, leaf(&c, S(3, N, D(2), D(5))), (gr_loc){0}));
  gc_free(&c);
}

static void check_binary(gr_op op, gr_shape a, gr_shape b) {
  gc c;
  gc_init(&c);
  gr_value *x = leaf(&c, a);
  gc_check(&c, gr_binary(c.g, op, x, leaf(&c, b), (gr_loc){0}));
  gc_free(&c);
}

static void check_reshape(void) {
  gc c;
  gc_init(&c);
  gc_check(&c, gr_reshape(c.g, leaf(&c, S(3, N, D(2), D(3))), S(2, N, D(6)), (gr_loc){0}));
  gc_free(&c);
}

/* Runs y = op(leaves) forward once and returns y (malloc'd), with the leaves' values in *xs: fill(leaf,
 * element), or uniform in [-1, 1) when fill is NULL. */
static double *run_forward_with(gc *c, gr_value *y, double **xs, double (*fill)(int, int64_t)) {
  gr_value *keep[8] = {y};
  int nk = 1;
  for (int i = 0; i < c->n_leaves; i++) keep[nk++] = c->leaves[i];
  compiled cp;
  compile_graph(c, "forward", keep, nk, &cp);
  gr_program p = cp.p;
  uint8_t *slab = cp.slab, *arena = cp.arena;
  for (int i = 0; i < c->n_leaves; i++) {
    int64_t nx = gr_shape_numel(&c->leaves[i]->shape, NB);
    double *x = storage(&p, slab, arena, c->leaves[i]);
    xs[i] = malloc(sizeof(double) * (size_t)nx);
    for (int64_t k = 0; k < nx; k++) xs[i][k] = x[k] = fill ? fill(i, k) : urand();
  }
  p.fn(slab, arena, NB, step_scalars);
  int64_t ny = gr_shape_numel(&y->shape, NB);
  double *out = malloc(sizeof(double) * (size_t)ny);
  memcpy(out, storage(&p, slab, arena, y), sizeof(double) * (size_t)ny);
  compiled_free(&cp);
  return out;
}
static double *run_forward(gc *c, gr_value *y, double **xs) { return run_forward_with(c, y, xs, NULL); }

/* y[n, co, oh, ow] = sum_{ci in co's group, ki, kj} x[n, ci, oh*s - p + ki*d, ow*s - p + kj*d] w[co, ci - g0, ki, kj]
 * — PyTorch's conv2d (a cross-correlation), written out directly. */
static void check_conv2d_forward(int64_t cin, int64_t h, int64_t w, int64_t cout, int64_t k, int64_t s, int64_t pd, int64_t d,
                                 int64_t groups) {
  gc c;
  gc_init(&c);
  gr_attrs a = {.stride = {s, s}, .pad = {pd, pd}, .dilation = {d, d}, .groups = groups};
  gr_value *in[2] = {leaf(&c, S(4, N, cin, h, w)), leaf(&c, S(4, cout, cin / groups, k, k))};
  gr_value *y = gr_apply(c.g, GR_OP_CONV2D, in, 2, &a, (gr_loc){0});
  double *xs[2];
  double *got = run_forward(&c, y, xs);
  int64_t ho = y->shape.dim[2], wo = y->shape.dim[3], cg = cin / groups, og = cout / groups;
  for (int64_t n = 0; n < NB; n++)
    for (int64_t co = 0; co < cout; co++)
      for (int64_t oh = 0; oh < ho; oh++)
        for (int64_t ow = 0; ow < wo; ow++) {
          double ref = 0;
          for (int64_t ci = 0; ci < cg; ci++)
            for (int64_t ki = 0; ki < k; ki++)
              for (int64_t kj = 0; kj < k; kj++) {
                int64_t ih = oh * s - pd + ki * d, iw = ow * s - pd + kj * d, cc = co / og * cg + ci;
                if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                ref += xs[0][((n * cin + cc) * h + ih) * w + iw] * xs[1][((co * cg + ci) * k + ki) * k + kj];
              }
          double v = got[((n * cout + co) * ho + oh) * wo + ow];
          if (fabs(v - ref) > 1e-12 * fmax(1, fabs(ref))) fail_msg("conv2d y[%lld,%lld,%lld,%lld] = %g, expected %g", (long long)n, (long long)co, (long long)oh, (long long)ow, v, ref);
        }
  free(got);
  free(xs[0]);
  free(xs[1]);
  gc_free(&c);
}

/* y = max over each window, padding excluded, on [N, 2, h, w] */
static void check_maxpool2d_forward(int64_t k, int64_t s, int64_t pd, int64_t h, int64_t w) {
  gc c;
  gc_init(&c);
  gr_attrs a = {.kernel = {k, k}, .stride = {s, s}, .pad = {pd, pd}};
  gr_value *x = leaf(&c, S(4, N, D(2), h, w));
  gr_value *y = gr_apply(c.g, GR_OP_MAXPOOL2D, &x, 1, &a, (gr_loc){0});
  double *xs[1];
  double *got = run_forward(&c, y, xs);
  int64_t ho = y->shape.dim[2], wo = y->shape.dim[3];
  for (int64_t pl = 0; pl < NB * 2; pl++)
    for (int64_t oh = 0; oh < ho; oh++)
      for (int64_t ow = 0; ow < wo; ow++) {
        double m = -INFINITY;
        for (int64_t ki = 0; ki < k; ki++)
          for (int64_t kj = 0; kj < k; kj++) {
            int64_t ih = oh * s - pd + ki, iw = ow * s - pd + kj;
            if (ih >= 0 && ih < h && iw >= 0 && iw < w) m = fmax(m, xs[0][(pl * h + ih) * w + iw]);
          }
        assert_true(got[(pl * ho + oh) * wo + ow] == m);
      }
  free(got);
  free(xs[0]);
  gc_free(&c);
}

/* conv2d over several geometries: plain, strided + padded, dilated, grouped, depthwise, non-square, and
 * those of the pack functions' paths */
static void check_conv2d(void) {
  static const struct {
    int64_t cin, h, w, cout, kh, kw, s, p, d, groups;
  } cases[] = {
      {2, 5, 5, 3, 3, 3, 1, 0, 1, 1}, {2, 6, 5, 4, 3, 3, 2, 1, 1, 1}, {3, 7, 7, 2, 3, 2, 1, 2, 2, 1},
      {4, 5, 4, 6, 3, 3, 1, 1, 1, 2}, {3, 5, 5, 3, 3, 3, 2, 1, 1, 3}, {1, 4, 4, 2, 1, 1, 1, 0, 1, 1},
      /* output planes of 32 (the input gradient's B packed by plain loads), 7-wide stride-2 rows (in
       * pieces), 2 x 2 planes (gathered) */
      {2, 4, 8, 3, 3, 3, 1, 1, 1, 1}, {2, 4, 14, 2, 3, 3, 2, 1, 1, 1}, {2, 3, 3, 2, 3, 3, 2, 1, 1, 1},
      /* more than 16 output channels: the input gradient's B in two depth blocks (f64 packs 16 rows
       * and 64 columns at a time, runtime/gemm.c) */
      {2, 5, 7, 20, 3, 3, 1, 1, 1, 1},
      /* 8 or more channels per group: the forward pack function's table of kernel elements, with
       * padding, stride 2, dilation and groups */
      {8, 5, 7, 3, 3, 3, 1, 1, 1, 1}, {8, 6, 9, 2, 3, 3, 2, 1, 1, 1}, {8, 7, 6, 2, 3, 2, 1, 2, 2, 1}, {16, 4, 5, 4, 3, 3, 1, 1, 1, 2},
      /* stride 2 over rows of 19 outputs */
      {2, 3, 37, 2, 3, 3, 2, 1, 1, 1},
      /* stride 1 over rows of 13: the input gradient's col2im in a block of 8 and a scalar tail */
      {2, 3, 13, 2, 3, 3, 1, 1, 1, 1},
      /* and over rows of 6: a block of 4 and a scalar tail */
      {2, 3, 6, 2, 3, 3, 1, 1, 1, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    gc c;
    gc_init(&c);
    gr_attrs a = {.stride = {cases[i].s, cases[i].s}, .pad = {cases[i].p, cases[i].p}, .dilation = {cases[i].d, cases[i].d},
                  .groups = cases[i].groups};
    gr_value *x = leaf(&c, S(4, N, cases[i].cin, cases[i].h, cases[i].w));
    gr_value *w = leaf(&c, S(4, cases[i].cout, cases[i].cin / cases[i].groups, cases[i].kh, cases[i].kw));
    gr_value *in[2] = {x, w};
    gc_check(&c, gr_apply(c.g, GR_OP_CONV2D, in, 2, &a, (gr_loc){0}));
    gc_free(&c);
  }
}

/* Pooling `op` on [N, 2, 5, 6] for each {kh, kw, sh, sw, ph, pw} of cases[n]. */
static void check_pool2d(gr_op op, const int64_t (*cases)[6], int n) {
  for (int i = 0; i < n; i++) {
    gc c;
    gc_init(&c);
    gr_attrs a = {.kernel = {cases[i][0], cases[i][1]}, .stride = {cases[i][2], cases[i][3]}, .pad = {cases[i][4], cases[i][5]}};
    gr_value *x = leaf(&c, S(4, N, D(2), D(5), D(6)));
    gc_check(&c, gr_apply(c.g, op, &x, 1, &a, (gr_loc){0}));
    gc_free(&c);
  }
}

/* x for check_maxpool2d_grad_special: three in four -inf (so that some windows hold nothing else),
 * one in 32 NaN, one in 8 of the rest a repeated 0.25 (ties); dy (leaf 1) uniform. */
static double pool_special(int leaf, int64_t k) {
  uint64_t h = (uint64_t)(k + 1) * 0x9E3779B97F4A7C15ull >> 40;
  if (leaf == 1 || h % 32 == 31) return leaf == 1 ? urand() : NAN;
  return h % 4 != 3 ? -INFINITY : h % 8 == 7 && h % 64 < 32 ? 0.25 : urand();
}

/* maxpool2d_grad, 3x3/2 with padding 1 over rows of 19 windows (the stride-2 kernel's two blocks), on
 * -inf, NaN and ties: each window's dy goes to its arg-max by PyTorch's rule (the first position
 * inside x to start with; a greater value or a NaN takes it over), so a window of -inf sends it to its
 * first position inside x, a tie to the first, NaNs to the last; and every input sums its windows'
 * shares in window order. Compared to the bit with that rule written out. */
static void check_maxpool2d_grad_special(void) {
  gc c;
  gc_init(&c);
  gr_attrs a = {.kernel = {3, 3}, .stride = {2, 2}, .pad = {1, 1}};
  int64_t H = 5, W = 37, Ho = 3, Wo = 19;
  gr_value *in[2] = {leaf(&c, S(4, N, D(2), H, W)), leaf(&c, S(4, N, D(2), Ho, Wo))};
  double *xs[2], *got = run_forward_with(&c, gr_apply(c.g, GR_OP_MAXPOOL2D_GRAD, in, 2, &a, (gr_loc){0}), xs, pool_special);
  double *want = calloc((size_t)(NB * 2 * H * W), sizeof *want);
  int64_t all_ninf = 0;
  for (int64_t pl = 0; pl < NB * 2; pl++)
    for (int64_t oh = 0; oh < Ho; oh++)
      for (int64_t ow = 0; ow < Wo; ow++) {
        int64_t h0 = oh * 2 - 1 < 0 ? 0 : oh * 2 - 1, w0 = ow * 2 - 1 < 0 ? 0 : ow * 2 - 1, best = h0 * W + w0;
        double m = -INFINITY;
        for (int64_t ih = h0; ih <= oh * 2 + 1 && ih < H; ih++)
          for (int64_t iw = w0; iw <= ow * 2 + 1 && iw < W; iw++) {
            double v = xs[0][pl * H * W + ih * W + iw];
            if (v > m || isnan(v)) m = v, best = ih * W + iw;
          }
        all_ninf += m == -INFINITY;
        want[pl * H * W + best] += xs[1][(pl * Ho + oh) * Wo + ow];
      }
  assert_true(all_ninf > 0); /* the case this is for occurs */
  assert_memory_equal(got, want, sizeof(double) * (size_t)(NB * 2 * H * W));
  free(got), free(want), free(xs[0]), free(xs[1]);
  gc_free(&c);
}

/* 3x3/2 pooling with padding 1 on [N, 2, 3, 37]: rows of 19 windows (two blocks of 16 in the
 * stride-2 max pooling kernel, codegen.c) */
static void check_pool2d_wide(gr_op op) {
  gc c;
  gc_init(&c);
  gr_attrs a = {.kernel = {3, 3}, .stride = {2, 2}, .pad = {1, 1}};
  gr_value *x = leaf(&c, S(4, N, D(2), D(3), D(37)));
  gc_check(&c, gr_apply(c.g, op, &x, 1, &a, (gr_loc){0}));
  gc_free(&c);
}

/* max pooling: 2x2/2, 3x3/2 with padding 1, 3x2/1 */
static const int64_t maxpool_cases[][6] = {{2, 2, 2, 2, 0, 0}, {3, 3, 2, 2, 1, 1}, {3, 2, 1, 1, 1, 0}};
/* average pooling: 2x2/2, 3x3/2 with padding 1 (counted in the divisor), a global 5x6 window */
static const int64_t avgpool_cases[][6] = {{2, 2, 2, 2, 0, 0}, {3, 3, 2, 2, 1, 1}, {5, 6, 1, 1, 0, 0}};

/* batchnorm in training (batch statistics) and with running statistics, on [N, C, H, W] and [N, C] */
static void check_batchnorm(void) {
  /* channels, and the spatial shape (none: [N, C]); channels go in blocks of ceil(64 / S) (codegen.c):
   * one block, a block of 4 and one of 1, and blocks of 1 */
  static const int64_t shapes[][3] = {{3, 0, 0}, {3, 2, 3}, {5, 4, 4}, {2, 8, 9}};
  for (int training = 0; training < 2; training++)
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
      gc c;
      gc_init(&c);
      gr_attrs a = {.training = training, .bn_eps = 1e-5, .bn_momentum = 0.1};
      int64_t ch = shapes[i][0];
      gr_value *x = leaf(&c, shapes[i][1] ? S(4, N, ch, shapes[i][1], shapes[i][2]) : S(2, N, ch));
      gr_value *gamma = leaf(&c, S(1, ch)), *beta = leaf(&c, S(1, ch));
      gr_value *rm = gr_buffer(c.g, "rm", S(1, ch), 0, (gr_loc){0}), *rv = gr_buffer(c.g, "rv", S(1, ch), 1, (gr_loc){0});
      c.fixed[c.n_fixed] = rm;
      c.fixed_lo[c.n_fixed++] = -0.5;
      c.fixed[c.n_fixed] = rv;
      c.fixed_lo[c.n_fixed++] = 0.5;
      gr_value *nbt = gr_buffer(c.g, "nbt", S(0), 0, (gr_loc){0});
      gr_value *in[6] = {x, gamma, beta, rm, rv, nbt};
      gc_check(&c, gr_apply(c.g, GR_OP_BATCHNORM, in, 6, &a, (gr_loc){0}));
      gc_free(&c);
    }
}

/* conv2d_bn, a frozen batchnorm folded into its convolution: the gradient with respect to x (the
 * folded parameters are frozen, so they get none); and its output against conv2d followed by
 * batchnorm on running statistics, computed in the same program. */
static void check_conv2d_bn(void) {
  static const struct {
    int64_t cin, h, w, cout, k, s, p, groups;
  } cases[] = {{2, 5, 5, 3, 3, 1, 0, 1}, {4, 6, 5, 4, 3, 2, 1, 2}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int forward = 0; forward < 2; forward++) {
      gc c;
      gc_init(&c);
      gr_attrs a = {.stride = {cases[i].s, cases[i].s}, .pad = {cases[i].p, cases[i].p}, .dilation = {1, 1}, .groups = cases[i].groups,
                    .bn_eps = 1e-5};
      gr_value *x = leaf(&c, S(4, N, cases[i].cin, cases[i].h, cases[i].w));
      int64_t co = cases[i].cout;
      gr_value *fx[5] = {gr_param(c.g, "w", S(4, co, cases[i].cin / cases[i].groups, cases[i].k, cases[i].k), 0, (gr_loc){0}),
                         gr_buffer(c.g, "gamma", S(1, co), 1, (gr_loc){0}), gr_buffer(c.g, "beta", S(1, co), 0, (gr_loc){0}),
                         gr_buffer(c.g, "rm", S(1, co), 0, (gr_loc){0}), gr_buffer(c.g, "rv", S(1, co), 1, (gr_loc){0})};
      const double lo[5] = {-0.5, 0.5, -0.5, -0.5, 0.5}; /* the variance positive */
      fx[0]->trainable = false; /* a frozen weight, as fold.c requires */
      for (int k = 0; k < 5; k++) {
        c.fixed[c.n_fixed] = fx[k];
        c.fixed_lo[c.n_fixed++] = lo[k];
      }
      gr_value *in[6] = {x, fx[0], fx[1], fx[2], fx[3], fx[4]};
      gr_value *y = gr_apply(c.g, GR_OP_CONV2D_BN, in, 6, &a, (gr_loc){0});
      if (!forward) {
        gc_check(&c, y);
        gc_free(&c);
        continue;
      }
      gr_value *cin[2] = {x, fx[0]};
      gr_value *conv = gr_apply(c.g, GR_OP_CONV2D, cin, 2, &a, (gr_loc){0});
      gr_value *bin[6] = {conv, fx[1], fx[2], fx[3], fx[4], gr_buffer(c.g, "nbt", S(0), 0, (gr_loc){0})};
      gr_value *ref = gr_apply(c.g, GR_OP_BATCHNORM, bin, 6, &a, (gr_loc){0});
      gr_value *keep[8] = {y, ref, x, fx[0], fx[1], fx[2], fx[3], fx[4]};
      compiled cp;
      compile_graph(&c, "conv2d_bn", keep, 8, &cp);
      for (int k = 0; k < 6; k++) {
        const gr_value *v = k ? fx[k - 1] : x;
        double *p = storage(&cp.p, cp.slab, cp.arena, v);
        for (int64_t e = 0; e < gr_shape_numel(&v->shape, NB); e++) p[e] = k ? lo[k - 1] + (urand() + 1) / 2 : urand();
      }
      cp.p.fn(cp.slab, cp.arena, NB, step_scalars);
      const double *got = storage(&cp.p, cp.slab, cp.arena, y), *want = storage(&cp.p, cp.slab, cp.arena, ref);
      for (int64_t e = 0; e < gr_shape_numel(&y->shape, NB); e++)
        if (fabs(got[e] - want[e]) > 1e-12 * fmax(1, fabs(want[e]))) fail_msg("conv2d_bn y[%lld] = %.17g, conv2d + batchnorm %.17g", (long long)e, got[e], want[e]);
      compiled_free(&cp);
      gc_free(&c);
    }
}

/* Gradient clipping: sum_squares of each gradient, their sum, clip_coef and scale against
 * torch.nn.utils.clip_grad_norm_'s formula, k = min(1, max_norm / (||g||_2 + 1e-6)), for a norm
 * that is clipped and one that is not. */
static void check_clip(void) {
  const double max_norms[2] = {0.5, 100};
  for (int t = 0; t < 2; t++) {
    gc c;
    gc_init(&c);
    gr_value *g1 = leaf(&c, S(2, D(3), D(4))), *g2 = leaf(&c, S(1, D(5)));
    gr_value *tot = gr_binary(c.g, GR_OP_ADD, gr_unary(c.g, GR_OP_SUMSQ, g1, (gr_loc){0}), gr_unary(c.g, GR_OP_SUMSQ, g2, (gr_loc){0}), (gr_loc){0});
    gr_attrs a = {.max_norm = max_norms[t]};
    gr_value *coef = gr_apply(c.g, GR_OP_CLIP_COEF, &tot, 1, &a, (gr_loc){0});
    gr_value *s1 = gr_binary(c.g, GR_OP_SCALE, g1, coef, (gr_loc){0}), *s2 = gr_binary(c.g, GR_OP_SCALE, g2, coef, (gr_loc){0});
    for (int i = 0; i < c.g->n_nodes; i++) covered[c.g->nodes[i]->op] = true;
    gr_value *keep[5] = {s1, s2, g1, g2, coef};
    compiled cp;
    compile_graph(&c, "clip", keep, 5, &cp);
    double *x1 = storage(&cp.p, cp.slab, cp.arena, g1), *x2 = storage(&cp.p, cp.slab, cp.arena, g2), sq = 0;
    for (int k = 0; k < 12; k++) {
      x1[k] = urand();
      sq += x1[k] * x1[k];
    }
    for (int k = 0; k < 5; k++) {
      x2[k] = urand();
      sq += x2[k] * x2[k];
    }
    cp.p.fn(cp.slab, cp.arena, NB, step_scalars);
    double want = fmin(1.0, max_norms[t] / (sqrt(sq) + 1e-6));
    assert_float_equal(*(double *)storage(&cp.p, cp.slab, cp.arena, coef), want, 1e-12);
    if (t == 1) assert_float_equal(want, 1.0, 0); /* a norm under the limit is left alone */
    const double *y1 = storage(&cp.p, cp.slab, cp.arena, s1), *y2 = storage(&cp.p, cp.slab, cp.arena, s2);
    for (int k = 0; k < 12; k++) assert_float_equal(y1[k], x1[k] * want, 1e-12);
    for (int k = 0; k < 5; k++) assert_float_equal(y2[k], x2[k] * want, 1e-12);
    compiled_free(&cp);
    gc_free(&c);
  }
}

/* concat along channels (axis 1) and along a trailing axis */
static void check_concat(void) {
  for (int ax = 1; ax <= 2; ax++) {
    gc c;
    gc_init(&c);
    gr_attrs a = {.axis = ax};
    gr_value *in[2] = {leaf(&c, S(3, N, D(2), D(3))), leaf(&c, ax == 1 ? S(3, N, D(4), D(3)) : S(3, N, D(2), D(5)))};
    gc_check(&c, gr_apply(c.g, GR_OP_CONCAT, in, 2, &a, (gr_loc){0}));
    gc_free(&c);
  }
}

/* dropout: each element is 0 or x / (1 - p); about p of them are 0; a fixed seed fixes the
 * mask; its gradient (finite differences, the mask fixed by the seed) */
static void check_dropout(void) {
  gc c;
  gc_init(&c);
  gr_attrs a = {.drop_p = 0.3, .salt = 7};
  gr_value *x = leaf(&c, S(2, N, D(4000)));
  gr_value *y = gr_apply(c.g, GR_OP_DROPOUT, &x, 1, &a, (gr_loc){0});
  double *xs[1];
  double *y1 = run_forward(&c, y, xs);
  int64_t n = NB * 4000, zeros = 0;
  for (int64_t i = 0; i < n; i++) {
    if (y1[i] == 0) {
      zeros++;
      continue;
    }
    assert_float_equal(y1[i], xs[0][i] / 0.7, 1e-12);
  }
  double frac = (double)zeros / (double)n;
  if (fabs(frac - 0.3) > 0.02) fail_msg("dropout zeroed %.4f of the elements, expected 0.3", frac);
  free(y1);
  free(xs[0]);
  gc_free(&c);
  gc_init(&c); /* the gradient, on a small input */
  gc_check(&c, gr_apply(c.g, GR_OP_DROPOUT, (gr_value *[]){leaf(&c, S(2, N, D(6)))}, 1, &a, (gr_loc){0}));
  gc_free(&c);
}

static void check_softmax_ce(void) {
  for (int smooth = 0; smooth < 4; smooth++) { /* plain, and with label smoothing 0.2; then with ignored rows */
    gc c;
    gc_init(&c);
    c.ignore_some = smooth >= 2;
    gr_attrs a = {.smoothing = smooth % 2 ? 0.2 : 0};
    gr_value *in[2] = {leaf(&c, S(2, N, D(5))), labels(&c, 5)};
    gc_check(&c, gr_apply(c.g, GR_OP_SOFTMAX_CE, in, 2, &a, (gr_loc){0}));
    gc_free(&c);
  }
}

/* gradient reversal inside a chain, tanh(grad_reverse(x)), at lambda 1 and 0.37: the finite
 * difference sees the identity, so the analytic gradient must be -lambda times it */
static void check_grad_reverse(void) {
  for (int k = 0; k < 2; k++) {
    float lambda = k ? 0.37f : 1.0f;
    step_scalars[GR_SCALAR_LAMBDA] = lambda;
    gc c;
    gc_init(&c);
    c.reversal = -lambda;
    gr_value *x = leaf(&c, S(2, N, D(4)));
    gr_value *r = gr_unary(c.g, GR_OP_GRAD_REVERSE, x, (gr_loc){0});
    gc_check(&c, gr_unary(c.g, GR_OP_TANH, r, (gr_loc){0}));
    gc_free(&c);
  }
  step_scalars[GR_SCALAR_LAMBDA] = 0;
}

/* layernorm over the last dimension of [N, 5] and [N, 2, 4], and over the last two of [N, 3, 2, 3] */
static void check_layernorm(void) {
  gr_shape xs[3] = {S(2, N, D(5)), S(3, N, D(2), D(4)), S(4, N, D(3), D(2), D(3))};
  gr_shape ps[3] = {S(1, D(5)), S(1, D(4)), S(2, D(2), D(3))};
  for (int i = 0; i < 3; i++) {
    gc c;
    gc_init(&c);
    gr_attrs a = {.bn_eps = 1e-5};
    gr_value *in[3] = {leaf(&c, xs[i]), leaf(&c, ps[i]), leaf(&c, ps[i])};
    gc_check(&c, gr_apply(c.g, GR_OP_LAYERNORM, in, 3, &a, (gr_loc){0}));
    gc_free(&c);
  }
}

/* embedding of [N, 3] indices into a 4 x 5 table (indices repeat, so gradients accumulate); then
 * the mean over the 3 positions, as a text classifier pools its tokens */
static void check_embedding(bool pooled) {
  gc c;
  gc_init(&c);
  c.ids = gr_input(c.g, "ids", GR_I32, S(2, N, D(3)), (gr_loc){0});
  c.vocab = 4;
  gr_value *in[2] = {c.ids, leaf(&c, S(2, D(4), D(5)))};
  gr_value *y = gr_apply(c.g, GR_OP_EMBEDDING, in, 2, &(gr_attrs){0}, (gr_loc){0});
  if (pooled) y = gr_apply(c.g, GR_OP_MEAN, &y, 1, &(gr_attrs){.axis = 1}, (gr_loc){0});
  gc_check(&c, y);
  gc_free(&c);
}

/* the padding row of an embedding reads like any other but gets no gradient (PyTorch's padding_idx) */
static void check_embedding_padding(void) {
  gc c;
  gc_init(&c);
  c.ids = gr_input(c.g, "ids", GR_I32, S(2, N, D(3)), (gr_loc){0});
  gr_value *table = leaf(&c, S(2, D(4), D(2)));
  gr_value *y = gr_apply(c.g, GR_OP_EMBEDDING, (gr_value *[]){c.ids, table}, 2, &(gr_attrs){.has_pad = 1, .pad_idx = 1}, (gr_loc){0});
  gr_value *dy = gr_input(c.g, "dy", GR_F64, y->shape, (gr_loc){0});
  assert_true(gr_autodiff(c.g, y, dy));
  for (int i = 0; i < c.g->n_nodes; i++) covered[c.g->nodes[i]->op] = true;
  compiled cp;
  compile_graph(&c, "padding", (gr_value *[]){y, dy, c.ids, table, table->grad}, 5, &cp);
  int32_t ids[NB * 3] = {1, 0, 1, 2, 1, 3, 0, 0, 1}; /* row 0 used 3 times, 2 and 3 once, 1 (padding) 4 times */
  memcpy(storage(&cp.p, cp.slab, cp.arena, c.ids), ids, sizeof ids);
  double *w = storage(&cp.p, cp.slab, cp.arena, table), *d = storage(&cp.p, cp.slab, cp.arena, dy);
  for (int k = 0; k < 8; k++) w[k] = k + 1;
  for (int k = 0; k < NB * 3 * 2; k++) d[k] = 1;
  cp.p.fn(cp.slab, cp.arena, NB, step_scalars);
  double *yv = storage(&cp.p, cp.slab, cp.arena, y), *g = storage(&cp.p, cp.slab, cp.arena, table->grad);
  for (int k = 0; k < NB * 3; k++) assert_true(yv[2 * k] == w[2 * ids[k]] && yv[2 * k + 1] == w[2 * ids[k] + 1]);
  const double want[8] = {3, 3, 0, 0, 1, 1, 1, 1};
  for (int k = 0; k < 8; k++) assert_true(g[k] == want[k]);
  compiled_free(&cp);
  gc_free(&c);
}

/* mean along dimension 1 and along a middle dimension */
static void check_mean(void) {
  for (int ax = 1; ax <= 2; ax++) {
    gc c;
    gc_init(&c);
    gc_check(&c, gr_apply(c.g, GR_OP_MEAN, (gr_value *[]){leaf(&c, S(4, N, D(3), D(2), D(4)))}, 1, &(gr_attrs){.axis = ax}, (gr_loc){0}));
    gc_free(&c);
  }
}

/* a loss against float targets in [0, 1) (fixed, no gradient) on [N, 4] and [N, 2, 3] */
static void check_target_loss(gr_op op) {
  for (int k = 0; k < 2; k++) {
    gc c;
    gc_init(&c);
    gr_shape s = k ? S(3, N, D(2), D(3)) : S(2, N, D(4));
    gr_value *t = gr_input(c.g, "targets", GR_F64, s, (gr_loc){0});
    c.fixed[c.n_fixed] = t;
    c.fixed_lo[c.n_fixed++] = 0;
    gc_check(&c, gr_apply(c.g, op, (gr_value *[]){leaf(&c, s), t}, 2, NULL, (gr_loc){0}));
    gc_free(&c);
  }
}

/* A value used twice (gradients summed by add) inside a small network ending in the loss. */
static void check_composite(void **state) {
  (void)state;
  gc c;
  gc_init(&c);
  c.away_from_zero = 0.05;
  gr_graph *g = c.g;
  gr_value *x = leaf(&c, S(3, N, D(2), D(2)));
  gr_value *w1 = leaf(&c, S(2, D(6), D(4))), *b1 = leaf(&c, S(1, D(6))), *w2 = leaf(&c, S(2, D(3), D(6)));
  gr_value *h = gr_reshape(g, x, S(2, N, D(4)), (gr_loc){0});
  h = gr_binary(g, GR_OP_BIAS_ADD, gr_matmul(g, h, w1, 0, 1, (gr_loc){0}), b1, (gr_loc){0});
  gr_value *t = gr_unary(g, GR_OP_TANH, h, (gr_loc){0});
  h = gr_binary(g, GR_OP_ADD, t, gr_unary(g, GR_OP_SIGMOID, t, (gr_loc){0}), (gr_loc){0}); /* t used twice */
  h = gr_matmul(g, h, w2, 0, 1, (gr_loc){0});
  gc_check(&c, gr_binary(g, GR_OP_SOFTMAX_CE, h, labels(&c, 3), (gr_loc){0}));
  gc_free(&c);
}

/* Fused epilogues (fuse.c) against central differences, in one network where each is fused:
 * conv2d + bias_add + relu, batchnorm (batch statistics) + residual add + relu, the tiled
 * max-pooling gradient + relu_grad (windows that tile the input, and overlapping padded ones), the sum
 * of r's two gradients + relu_grad, and batchnorm's weight gradient computed beside its input gradient. */
static void check_fused(void **state) {
  (void)state;
  /* kernel, stride, padding, height, width: windows that tile, that do not, 2-wide ones in odd rows of
   * more than 16 windows (the vector kernel's masked second block and the column left over), and
   * overlapping padded ones in rows of 19 windows (the strided vector kernel's second block, and a
   * last window over the padding) */
  static const int64_t pools[4][5] = {{2, 2, 0, 6, 6}, {3, 2, 1, 6, 6}, {2, 2, 0, 3, 35}, {3, 2, 1, 4, 37}};
  for (int pi = 0; pi < 4; pi++) {
    gc c;
    gc_init(&c);
    c.away_from_zero = 0.05;
    gr_graph *g = c.g;
    gr_loc at = {0};
    gr_value *x = leaf(&c, S(4, N, D(2), pools[pi][3], pools[pi][4]));
    gr_value *w = leaf(&c, S(4, D(3), D(2), D(3), D(3))), *b = leaf(&c, S(1, D(3))), *gamma = leaf(&c, S(1, D(3)));
    gr_attrs ca = {.stride = {1, 1}, .pad = {1, 1}, .dilation = {1, 1}, .groups = 1};
    gr_value *h = gr_apply(g, GR_OP_CONV2D, (gr_value *[]){x, w}, 2, &ca, at);
    gr_value *r = gr_unary(g, GR_OP_RELU, gr_binary(g, GR_OP_BIAS_ADD, h, b, at), at);
    gr_value *beta = gr_buffer(g, "beta", S(1, D(3)), 0, at), *rm = gr_buffer(g, "rm", S(1, D(3)), 0, at);
    gr_value *rv = gr_buffer(g, "rv", S(1, D(3)), 1, at), *nbt = gr_buffer(g, "nbt", S(0), 0, at);
    c.fixed[c.n_fixed] = beta;
    c.fixed_lo[c.n_fixed++] = -0.5;
    gr_attrs ba = {.training = 1, .bn_eps = 1e-5, .bn_momentum = 0.1};
    gr_value *bn = gr_apply(g, GR_OP_BATCHNORM, (gr_value *[]){r, gamma, beta, rm, rv, nbt}, 6, &ba, at);
    gr_value *y = gr_unary(g, GR_OP_RELU, gr_binary(g, GR_OP_ADD, bn, r, at), at);
    const int64_t *pk = pools[pi];
    gr_attrs pa = {.kernel = {pk[0], pk[0]}, .stride = {pk[1], pk[1]}, .pad = {pk[2], pk[2]}};
    int before = fused_nodes;
    gc_check(&c, gr_apply(g, GR_OP_MAXPOOL2D, &y, 1, &pa, at));
    const char *off = getenv("GRAFT_FUSE");
    if (!off || strcmp(off, "0")) assert_int_equal(fused_nodes - before, 7); /* bias_add, relu; add, relu; relu_grad; relu_grad; grad_gamma */
    gc_free(&c);
  }
}

/* The optimizers of torch.optim, transcribed (float32, as PyTorch updates float32 parameters):
 *   SGD:   g += wd p; v = mu v + g (v = g on the first step, same as v = 0); g = nesterov ? g + mu v : v;
 *          p -= lr g
 *   Adam:  g += wd p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *          p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *   AdamW: p *= 1 - lr wd; then Adam without the g += wd p */
typedef struct upd_case {
  gr_op op;
  float mu, wd;
  bool nesterov;
  double b1, b2, eps;
  bool decoupled;
} upd_case;

static void reference_step(const upd_case *u, float *p, const float *g, float *s1, float *s2, int n, float lr, int t) {
  for (int k = 0; k < n; k++) {
    float gr = g[k];
    if (u->op == GR_OP_ADAM_UPDATE) {
      if (u->decoupled)
        p[k] *= (float)(1 - (double)lr * u->wd);
      else
        gr += u->wd * p[k];
      s1[k] = (float)u->b1 * s1[k] + (float)(1 - u->b1) * gr;
      s2[k] = (float)u->b2 * s2[k] + (float)(1 - u->b2) * gr * gr;
      double bc1 = 1 - pow(u->b1, t), bc2 = 1 - pow(u->b2, t);
      float denom = sqrtf(s2[k]) / (float)sqrt(bc2) + (float)u->eps;
      p[k] -= (float)(lr / bc1) * (s1[k] / denom);
      continue;
    }
    gr += u->wd * p[k];
    if (u->op == GR_OP_SGD_MOMENTUM_UPDATE) {
      s1[k] = u->mu * s1[k] + gr;
      gr = u->nesterov ? gr + u->mu * s1[k] : s1[k];
    }
    p[k] -= lr * gr;
  }
}

/* Runs the generated update for 5 steps (changing learning rate) against the reference. */
static void check_update(const upd_case *u) {
  gc c;
  gc_init(&c);
  c.g->fdtype = GR_F32;
  gr_graph *g = c.g;
  enum { K = 37 };
  gr_value *p = gr_param(g, "p", S(1, D(K)), 0, (gr_loc){0});
  gr_value *gin = gr_input(g, "g", GR_F32, S(1, D(K)), (gr_loc){0});
  gr_value *s1 = gr_state(g, "s1", S(1, D(K))), *s2 = gr_state(g, "s2", S(1, D(K)));
  gr_attrs a = {.momentum = u->mu, .weight_decay = u->wd, .nesterov = u->nesterov, .beta1 = u->b1, .beta2 = u->b2,
                .eps = u->eps, .decoupled = u->decoupled, .lr_slot = GR_SCALAR_LR, .step_slot = GR_SCALAR_STEP};
  gr_value *in[4] = {p, gin, s1, s2};
  gr_apply_update(g, u->op, in, gr_ops[u->op].arity, &a, (gr_loc){0});
  covered[u->op] = true;
  gr_value *keep[1] = {gin};
  compiled cp;
  compile_graph(&c, "update", keep, 1, &cp);
  gr_program prog = cp.p;
  uint8_t *slab = cp.slab, *arena = cp.arena;
  float *pp = (float *)(slab + p->slab_offset), *s1p = (float *)(slab + s1->slab_offset), *s2p = (float *)(slab + s2->slab_offset);
  float *gp = (float *)(arena + prog.offsets[gin->id]);
  float ref_p[K], ref_s1[K] = {0}, ref_s2[K] = {0};
  for (int k = 0; k < K; k++) ref_p[k] = pp[k] = (float)urand();
  for (int step = 1; step <= 5; step++) {
    float lr = 0.05f / (float)step;
    for (int k = 0; k < K; k++) gp[k] = (float)urand();
    reference_step(u, ref_p, gp, ref_s1, ref_s2, K, lr, step);
    prog.fn(slab, arena, 1, (float[GR_SCALAR_COUNT]){[GR_SCALAR_LR] = lr, [GR_SCALAR_STEP] = (float)step});
    for (int k = 0; k < K; k++) {
      assert_float_equal(pp[k], ref_p[k], 2e-6 * fmax(1.0, fabs(ref_p[k])));
      if (u->op != GR_OP_SGD_UPDATE) assert_float_equal(s1p[k], ref_s1[k], 1e-6 * fmax(1.0, fabs(ref_s1[k])));
      if (u->op == GR_OP_ADAM_UPDATE) assert_float_equal(s2p[k], ref_s2[k], 1e-6 * fmax(1.0, fabs(ref_s2[k])));
    }
  }
  compiled_free(&cp);
  gc_free(&c);
}

/* The test of one op, chosen by the table. No default case: a new op must be added here. */
static void test_op(void **state) {
  gr_op op = (gr_op)(intptr_t)*state;
  unsigned flags = gr_ops[op].flags;
  switch (op) {
  case GR_OP_INPUT:
  case GR_OP_PARAM:
  case GR_OP_STATE: covered[op] = true; return; /* leaves: nothing to differentiate */
  case GR_OP_MATMUL: check_matmul(); return;
  case GR_OP_BIAS_ADD:
    check_binary(op, S(2, N, D(6)), S(1, D(6)));               /* a linear layer's bias */
    check_binary(op, S(4, N, D(3), D(2), D(4)), S(1, D(3)));   /* a conv layer's, per channel */
    return;
  case GR_OP_CONV2D:
    check_conv2d_forward(3, 6, 5, 4, 3, 1, 0, 1, 1);
    check_conv2d_forward(4, 7, 7, 6, 3, 2, 1, 1, 2);
    check_conv2d_forward(2, 8, 8, 3, 3, 1, 2, 2, 1);
    check_conv2d_forward(3, 5, 5, 3, 3, 1, 1, 1, 3);
    /* the forward GEMM packs im2col(x) itself (codegen.c, im2col_pack): rows of 16 positions (one
     * masked load per half panel), rows cut by half panels into 2, 3 or 4 pieces, at strides 1 and 2
     * (even lanes of 32-lane loads), dilated and grouped; stride 3 and short rows gather */
    check_conv2d_forward(2, 5, 16, 3, 3, 1, 1, 1, 1);
    check_conv2d_forward(2, 4, 32, 2, 3, 2, 1, 1, 1);
    check_conv2d_forward(2, 5, 33, 3, 3, 2, 1, 1, 1);
    check_conv2d_forward(3, 6, 15, 4, 3, 2, 1, 1, 1);
    check_conv2d_forward(2, 4, 14, 2, 3, 2, 1, 1, 1);
    check_conv2d_forward(4, 5, 9, 4, 3, 1, 1, 2, 2);
    check_conv2d_forward(2, 7, 10, 3, 3, 3, 1, 1, 1);
    check_conv2d();
    return;
  case GR_OP_MAXPOOL2D:
    check_maxpool2d_forward(2, 2, 0, 7, 6);
    check_maxpool2d_forward(3, 2, 1, 7, 6);
    /* rows of 19 windows: the stride-2 kernel's two blocks of 16, the second partial (codegen.c) */
    check_maxpool2d_forward(3, 2, 1, 4, 37);
    check_pool2d(op, maxpool_cases, 3);
    check_pool2d_wide(op);
    check_maxpool2d_grad_special();
    return;
  case GR_OP_ADD:
  case GR_OP_MUL: check_binary(op, S(2, N, D(4)), S(2, N, D(4))); return;
  case GR_OP_GELU: check_unary(op, 0); return;
  case GR_OP_DROPOUT: check_dropout(); return;
  case GR_OP_SOFTMAX:
  case GR_OP_LOG_SOFTMAX: check_unary(op, 0); return;
  case GR_OP_RELU: check_unary(op, 0.05); return;
  case GR_OP_SIGMOID:
  case GR_OP_TANH: check_unary(op, 0); return;
  case GR_OP_RESHAPE: check_reshape(); return;
  case GR_OP_GRAD_REVERSE: check_grad_reverse(); return;
  case GR_OP_CONCAT: check_concat(); return;
  case GR_OP_BATCHNORM: check_batchnorm(); return;
  case GR_OP_CONV2D_BN: check_conv2d_bn(); return;
  case GR_OP_SUMSQ:
  case GR_OP_CLIP_COEF:
  case GR_OP_SCALE: check_clip(); return;
  case GR_OP_AVGPOOL2D: check_pool2d(op, avgpool_cases, 3); return;
  case GR_OP_SOFTMAX_CE: check_softmax_ce(); return;
  case GR_OP_LAYERNORM: check_layernorm(); return;
  case GR_OP_EMBEDDING:
    check_embedding(false);
    check_embedding_padding();
    return;
  case GR_OP_MEAN:
    check_mean();
    check_embedding(true);
    return;
  case GR_OP_BCE_LOGITS:
  case GR_OP_MSE: check_target_loss(op); return;
  case GR_OP_SGD_UPDATE:
    check_update(&(upd_case){.op = op});
    check_update(&(upd_case){.op = op, .wd = 0.01f});
    return;
  case GR_OP_SGD_MOMENTUM_UPDATE:
    check_update(&(upd_case){.op = op, .mu = 0.9f});
    check_update(&(upd_case){.op = op, .mu = 0.9f, .wd = 0.001f, .nesterov = true});
    return;
  case GR_OP_ADAM_UPDATE:
    check_update(&(upd_case){.op = op, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8});                        /* Adam */
    check_update(&(upd_case){.op = op, .b1 = 0.8, .b2 = 0.99, .eps = 1e-6, .wd = 0.01f});           /* Adam, L2 */
    check_update(&(upd_case){.op = op, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .wd = 0.05f, .decoupled = true}); /* AdamW */
    return;
  case GR_OP_RELU_GRAD:
  case GR_OP_SIGMOID_GRAD:
  case GR_OP_TANH_GRAD:
  case GR_OP_GELU_GRAD:
  case GR_OP_SOFTMAX_GRAD:
  case GR_OP_LOG_SOFTMAX_GRAD:
  case GR_OP_AVGPOOL2D_GRAD:
  case GR_OP_BATCHNORM_GRAD_INPUT:
  case GR_OP_BATCHNORM_GRAD_GAMMA:
  case GR_OP_SLICE:
  case GR_OP_BIAS_GRAD:
  case GR_OP_CONV2D_GRAD_INPUT:
  case GR_OP_CONV2D_GRAD_WEIGHT:
  case GR_OP_MAXPOOL2D_GRAD:
  case GR_OP_SOFTMAX_CE_GRAD:
  case GR_OP_GRAD_REVERSE_GRAD:
  case GR_OP_LAYERNORM_GRAD_INPUT:
  case GR_OP_LAYERNORM_GRAD_GAMMA:
  case GR_OP_SUM_ROWS:
  case GR_OP_EMBEDDING_GRAD:
  case GR_OP_MEAN_GRAD:
  case GR_OP_BCE_LOGITS_GRAD:
  case GR_OP_MSE_GRAD:
    assert_true(flags & GR_OPF_BWD); /* checked through the ops whose gradients use it */
    return;
  case GR_OP_COUNT: fail_msg("not an op"); return;
  }
  fail_msg("op %d has no gradient check: add one to tests/test_gradcheck.c", (int)op);
}

static void test_every_op_covered(void **state) {
  (void)state;
  for (int op = 0; op < GR_OP_COUNT; op++)
    if (!covered[op]) fail_msg("op '%s' was not exercised by any gradient or update check", gr_ops[op].name);
}

int main(void) {
  struct CMUnitTest tests[GR_OP_COUNT + 3];
  int n = 0;
  for (int op = 0; op < GR_OP_COUNT; op++)
    tests[n++] = (struct CMUnitTest){.name = gr_ops[op].name, .test_func = test_op, .initial_state = (void *)(intptr_t)op};
  tests[n++] = (struct CMUnitTest){.name = "composite network with a shared value", .test_func = check_composite};
  tests[n++] = (struct CMUnitTest){.name = "fused epilogues", .test_func = check_fused};
  tests[n++] = (struct CMUnitTest){.name = "every op covered", .test_func = test_every_op_covered};
  return _cmocka_run_group_tests("gradcheck", tests, (size_t)n, NULL, NULL);
}
