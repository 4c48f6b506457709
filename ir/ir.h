/* ir.h — graft's intermediate representation.
 *
 * A graph is a list of nodes in topological order (builders append; a node's inputs always exist
 * before it). Each node produces at most one value. Shapes are static except that dimension 0 may be
 * the symbolic batch size N (GR_BATCH): kernels take N at run time, so one compiled step serves full and
 * partial batches. Every node keeps the YAML location (gr_loc) that made it, so a shape error found
 * here points at the user's line. The graph and everything in it live in the compile arena.
 *
 * Builders run the op's shape rule immediately: gr_apply() returns NULL after reporting a diagnostic
 * when the inputs do not fit, so the frontends never build an ill-shaped graph. */
#ifndef GRAFT_IR_H
#define GRAFT_IR_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "ir/arena.h"
#include "ir/diag.h"

#define GR_MAX_RANK 6
#define GR_MAX_IN 6
#define GR_BATCH (-1) /* a dimension of size N, the run-time batch size (dimension 0 only) */

typedef enum { GR_F32, GR_F64, GR_I32, GR_DTYPE_COUNT } gr_dtype;
extern const char *const gr_dtype_name[GR_DTYPE_COUNT];
extern const int gr_dtype_size[GR_DTYPE_COUNT];

typedef struct gr_shape {
  int rank;
  int64_t dim[GR_MAX_RANK]; /* dim[0] may be GR_BATCH */
} gr_shape;

typedef enum {
#define OP(id, name, arity, kclass, flags, shape, grad, emit) GR_OP_##id,
#include "ir/ops.def"
#undef OP
  GR_OP_COUNT
} gr_op;

typedef enum { GR_KC_NONE, GR_KC_VIEW, GR_KC_ELEM, GR_KC_GEMM, GR_KC_CUSTOM, GR_KC_COUNT } gr_kclass;
enum { GR_OPF_BWD = 1, GR_OPF_UPD = 2, GR_OPF_LOSS = 4 };

typedef struct gr_op_info {
  const char *name;
  int arity;
  gr_kclass kclass;
  unsigned flags;
} gr_op_info;
extern const gr_op_info gr_ops[GR_OP_COUNT];
extern const char *const gr_kclass_name[GR_KC_COUNT];

/* Where a value lives at run time. */
typedef enum {
  GR_ROLE_TEMP,  /* activation, gradient, scratch: planned into a step's arena */
  GR_ROLE_INPUT, /* written by the runtime before each step (batch data, labels, seeds) */
  GR_ROLE_PARAM, /* model parameter: persistent slab */
  GR_ROLE_STATE, /* optimizer state: persistent slab */
  GR_ROLE_COUNT
} gr_role;

typedef struct gr_node gr_node;

typedef struct gr_value {
  int id;
  gr_dtype dtype;
  gr_shape shape;
  gr_node *def;       /* the node that produces it */
  const char *name;   /* "fc1.weight", "fc1", "image", or NULL for unnamed temporaries */
  gr_role role;
  bool trainable;     /* receives a gradient: params the plan trains (and inputs, in gradient checks) */
  bool buffer;        /* params: model state that is never trained (batchnorm statistics) */
  float init_bound;   /* params: U(-b, b) initialisation; 0: every element init_value */
  float init_value;   /* params: the constant start value when init_bound is 0 (batchnorm: weight 1, running_var 1) */
  float init_std;     /* params: if > 0, N(0, std^2) instead (embeddings) */
  int group;          /* params: 1 + the index of the plan's parameter group (learning-rate slot), 0: none */
  int phase;          /* params: the first phase (gradual unfreezing) in which it is trained */
  gr_loc unfrozen_at; /* params: the unfreeze pattern that made it trainable (file NULL: none) */
  int64_t zero_row;   /* params: this row (index along dimension 0) starts at 0 (an embedding's padding); -1: none */
  struct gr_value *grad; /* set by autodiff: d(loss)/d(this) */
  int64_t slab_offset;   /* params and state: byte offset in the persistent slab (-1 before planning) */
} gr_value;

typedef struct gr_attrs {
  int trans_a, trans_b;         /* matmul: use A^T / B^T */
  gr_shape shape;               /* reshape: the target shape; gradient ops: the shape of what they differentiate */
  float momentum, weight_decay; /* sgd_update; weight_decay also adam_update */
  int nesterov;                 /* sgd_update */
  double beta1, beta2, eps;     /* adam_update (double: bias corrections as PyTorch computes them) */
  int decoupled;                /* adam_update: AdamW's decoupled weight decay */
  int lr_slot;                  /* updates: index of the learning rate in the step's scalars */
  int step_slot;                /* adam_update: index of its step count in the scalars (GR_SCALAR_STEP or a phase's) */
  int64_t kernel[2], stride[2], pad[2], dilation[2], groups; /* conv2d, pooling (kernel: pooling only) */
  int axis;                     /* concat, slice, mean: the dimension (>= 1) */
  int training;                 /* batchnorm: batch statistics (and update the running ones), else running */
  double smoothing;             /* softmax_cross_entropy: label smoothing epsilon */
  double drop_p;                /* dropout: probability of zeroing an element */
  int salt;                     /* dropout: distinguishes the masks of different layers */
  double bn_eps, bn_momentum;   /* batchnorm; bn_eps also layernorm */
  int64_t start, len;           /* slice: the range [start, start + len) along axis */
  int64_t pad_idx;              /* embedding: the padding row (no gradient), if has_pad */
  int has_pad;
  double max_norm;              /* clip_coef: the gradients' largest global L2 norm */
} gr_attrs;

struct gr_node {
  int id;
  gr_op op;
  int n_in;
  gr_value *in[GR_MAX_IN];
  gr_value *out;      /* NULL for update ops */
  gr_attrs a;
  gr_loc loc;         /* YAML node that made it (backward nodes: their forward node's) */
  const char *layer;  /* model layer name, for messages and dumps */
  bool backward;      /* made by autodiff */
};

typedef struct gr_graph {
  gr_arena *arena;
  gr_diag *diag;
  gr_dtype fdtype; /* floating-point type of activations and parameters (F32; F64 for gradient checks) */
  gr_node **nodes;
  int n_nodes, cap_nodes;
  gr_value **values;
  int n_values, cap_values;
  const char *layer;  /* layer name stamped on new nodes */
  bool in_backward;   /* stamp new nodes as backward */
} gr_graph;

gr_graph *gr_graph_new(gr_arena *a, gr_diag *d, gr_dtype fdtype);

/* Leaves. */
gr_value *gr_input(gr_graph *g, const char *name, gr_dtype dt, gr_shape shape, gr_loc loc);
gr_value *gr_param(gr_graph *g, const char *name, gr_shape shape, float init_bound, gr_loc loc);
gr_value *gr_state(gr_graph *g, const char *name, gr_shape shape);
/* A parameter that is not trained (batchnorm's running statistics), starting at `value`. */
gr_value *gr_buffer(gr_graph *g, const char *name, gr_shape shape, float value, gr_loc loc);
/* Any op: runs the shape rule; on a mismatch reports at `loc` and returns NULL. `a` may be NULL. */
gr_value *gr_apply(gr_graph *g, gr_op op, gr_value *const *in, int n_in, const gr_attrs *a, gr_loc loc);
/* Update ops (no output value); returns the node. */
gr_node *gr_apply_update(gr_graph *g, gr_op op, gr_value *const *in, int n_in, const gr_attrs *a, gr_loc loc);

/* Convenience builders. */
gr_value *gr_unary(gr_graph *g, gr_op op, gr_value *x, gr_loc loc);
gr_value *gr_binary(gr_graph *g, gr_op op, gr_value *x, gr_value *y, gr_loc loc);
gr_value *gr_matmul(gr_graph *g, gr_value *a, gr_value *b, int trans_a, int trans_b, gr_loc loc);
gr_value *gr_reshape(gr_graph *g, gr_value *x, gr_shape shape, gr_loc loc);

/* Shapes. */
gr_shape gr_shape_make(int rank, const int64_t *dims);
bool gr_shape_eq(const gr_shape *a, const gr_shape *b);
bool gr_shape_has_batch(const gr_shape *s);
int64_t gr_shape_inner(const gr_shape *s); /* elements per batch row (all elements if no batch dim) */
int64_t gr_shape_numel(const gr_shape *s, int64_t batch); /* with N = batch */
/* "[N, 256]" into buf; returns buf. */
char *gr_shape_str(const gr_shape *s, char *buf, size_t n);
/* Runs the shape rule of a node; false with a message in err. */
bool gr_infer_shape(const gr_node *n, gr_shape *out, gr_dtype *dt, char *err, size_t errlen);
/* Elements of scratch memory a node's kernel needs while it runs with up to max_batch samples (0 for
 * most ops): a convolution's staging for one chunk of samples (gr_conv_chunk): its output [Cout,
 * chunk*Ho*Wo] forward, im2col's columns for the input gradient (col2im's input), both for the weight
 * gradient. */
int64_t gr_scratch_elems(const gr_node *n, int64_t max_batch);

/* Convolution geometry, from the input and weight shapes and the attributes. */
typedef struct gr_conv_geom {
  int64_t cin, h, w, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, ho, wo;
} gr_conv_geom;
gr_conv_geom gr_conv_geometry(const gr_shape *x, const gr_shape *w, const gr_attrs *a);
/* Samples a convolution kernel stages at a time: as many as fit GR_CONV_STAGING floats of im2col
 * columns and output staging (at least one), whether or not the kernel stores the columns (the
 * forward and input-gradient kernels pack them block by block, codegen.c). Bounds the scratch memory
 * whatever the batch, and keeps the weight gradient's columns nearer the caches: 2 Mi floats (8 MiB)
 * rather than 4 Mi made ResNet-18's steps 10-14% faster (docs/benchmarks.md), the GEMM's packing
 * reading the columns from the cache rather than from memory; 1 Mi was no faster, 512 Ki slower. */
#define GR_CONV_STAGING (2048 * 1024)
int64_t gr_conv_chunk(const gr_conv_geom *g);
/* Columns of a GEMM micro-panel (runtime/gemm.c's micro-kernel width): how a GEMM's B is packed,
 * also by the generated functions that pack a convolution's B (gr_sgemm_cb). */
#define GR_PANEL 32
/* Whether max-pooling windows tile the input (stride = kernel, no padding, at most 16 elements): each
 * input is in at most one window, so the gradient writes dx whole. */
bool gr_pool_tiles(const gr_attrs *a);

/* Whether a plan's name pattern (a shell glob) matches a dotted name or one of its leading
 * components ("layer1" matches "layer1.0.conv1.weight"); see ir/match.c. */
bool gr_glob_match(const char *pattern, const char *name);

/* Text dump (`graft ir`): one line per node. `plan_offsets` (indexed by value id; may be NULL) adds
 * each value's arena offset. */
void gr_graph_dump(const gr_graph *g, FILE *out, const int64_t *plan_offsets);
void gr_node_dump(const gr_node *n, FILE *out);
/* Graphviz of a program's nodes; frozen and cached (may be NULL) are indexed by node id: nodes of the
 * frozen forward region, and those the feature cache computes once. */
void gr_graph_dot(const gr_graph *g, gr_node *const *nodes, int n_nodes, const bool *frozen, const bool *cached, FILE *out);

#endif
