/* compiler.h — the passes from a forward graph to JIT-compiled step functions, and the driver that
 * runs them in order for a plan:
 *
 *   frontends   plan + model YAML -> forward graph (shapes inferred as nodes are built)
 *   freeze      the plan's transfer settings: frozen parameters, batchnorm modes, parameter groups
 *   loss        the plan's loss on the model output
 *   autodiff    backward nodes, only between trainable parameters and the loss
 *   optimizer   one update node per trainable parameter, with its state
 *   fuse        elementwise epilogues into the kernel that makes their input
 *   memplan     slab layout for parameters and state; one arena per program, by liveness
 *   codegen     LLVM IR for every program, O3 for the host CPU, compiled to an object (or read from
 *               the kernel cache) and linked by ORC LLJIT; aot.c writes it out for `graft compile`
 *
 * `graft ir --after=PASS` prints the graph after any of them. */
#ifndef GRAFT_COMPILER_H
#define GRAFT_COMPILER_H
#include <stdbool.h>
#include <stdio.h>
#include "frontends/frontend.h"
#include "ir/ir.h"
#include "runtime/model.h"
#include "runtime/runtime.h"

extern const char *const gr_pass_names[]; /* NULL-terminated, in order */

/* autodiff.c: fills v->grad for every value on a path from a trainable parameter to y, given dy (a
 * value of y's shape, usually an input holding 1). Backward nodes are ordinary IR appended to g. */
bool gr_autodiff(gr_graph *g, gr_value *y, gr_value *dy);

/* freeze.c: the plan's freeze/unfreeze patterns, batchnorm policy and parameter groups, applied to
 * the forward graph before autodiff; false after reporting patterns that match nothing or conflict. */
bool gr_apply_transfer(gr_graph *g, const gr_transfer *t, int phase, gr_diag *d);
/* fold.c: frozen batchnorms folded into the bias-free convolutions before them (conv2d_bn); returns
 * how many. */
int gr_fold_batchnorm(gr_graph *g);
/* optimizer.c: appends update nodes for every trainable parameter that has a gradient. */
typedef struct gr_opt_cfg {
  gr_opt_kind kind;
  float momentum, weight_decay; /* sgd (weight_decay: all) */
  bool nesterov;                /* sgd */
  double beta1, beta2, eps;     /* adam, adamw */
  double clip_grad_norm;        /* > 0: gradients scaled to at most this global L2 norm first */
  const gr_param_group *groups; /* a parameter in group k (v->group = k + 1) takes its learning rate from */
  int n_groups;                 /* scalars[GR_SCALAR_COUNT + k] and weight decay times groups[k].wd_mult */
} gr_opt_cfg;
void gr_add_optimizer(gr_graph *g, const gr_opt_cfg *cfg);

/* A program: an ordered subset of the graph's nodes compiled into one step function. */
typedef struct gr_program {
  const char *name;   /* also the symbol name of its step function */
  gr_node **nodes;
  int n_nodes;
  gr_value **keep;    /* values the runtime reads after the step: kept live to the end */
  int n_keep;
  int64_t *offsets;   /* memplan: arena byte offset per value id, -1 if not in the arena */
  int64_t *scratch;   /* memplan: arena byte offset of each node's scratch, by node id, -1 if none */
  int64_t arena_bytes;
  gr_step_fn fn;      /* codegen */
  /* fuse.c, indexed by node id: chain[n] nodes follow anchor n in `nodes` and run in its kernel (an
   * epilogue, or siblings: gr_fuse_siblings); in_chain[n]: n is one of them. By value id:
   * unstored[v], never written to memory. */
  int *chain;
  bool *in_chain;
  bool *unstored;
} gr_program;

/* fuse.c: elementwise epilogues fused into the kernel that makes their input (see there). */
#define GR_FUSE_MAX 6          /* nodes in one epilogue */
#define GR_FUSE_MAX_OPERANDS 4 /* operands the epilogue reads besides the value it transforms */
void gr_fuse_program(const gr_graph *g, gr_program *p);
/* Whether n's kernel can apply an epilogue (codegen stores each of its outputs once, as a value). */
bool gr_fuse_anchor(const gr_node *n);
/* Whether the nodes fused into n's kernel are siblings, whose outputs it computes beside its own
 * (batchnorm's gradients), rather than an epilogue. */
bool gr_fuse_siblings(const gr_node *n);
/* Kernels the program runs (leaves and views run none); *fused (may be NULL): nodes in epilogues. */
int gr_program_kernels(const gr_program *p, int *fused);

/* memplan.c */
int64_t gr_plan_slab(gr_graph *g); /* assigns slab offsets to params and state; returns bytes */
void gr_plan_arena(const gr_graph *g, gr_program *p, int64_t max_batch);
/* The value whose storage v uses (through views). */
const gr_value *gr_storage_root(const gr_value *v);
int64_t gr_value_bytes(const gr_value *v, int64_t batch);

/* codegen.c + jit.c: compiles the programs into one module and fills each program's fn. */
typedef struct gr_jit gr_jit;
typedef struct gr_codegen_opts {
  FILE *llvm_dump;   /* print the optimised LLVM IR here (NULL: don't) */
  bool no_opt;       /* skip the O3 pipeline (debugging) */
  bool no_cache;     /* neither read nor write the kernel cache */
  const char *cache_dir; /* the kernel cache (NULL: $GRAFT_CACHE_DIR, $XDG_CACHE_HOME/graft or ~/.cache/graft) */
} gr_codegen_opts;
gr_jit *gr_jit_compile(gr_graph *g, gr_program *progs, int n_progs, const gr_codegen_opts *o, gr_diag *d);
void gr_jit_free(gr_jit *j);
/* How a compile went: its machine code read from the kernel cache, or compiled (and, with `cached`,
 * stored there); the seconds from the module built to the step functions callable. */
typedef struct gr_jit_info {
  bool from_cache, cached;
  double seconds;
  int parts, threads; /* modules the graph was compiled as; threads that compiled them (0: none, all from the cache) */
} gr_jit_info;
gr_jit_info gr_jit_stats(const gr_jit *j);

/* passes.c: the whole pipeline for a plan. */
typedef struct gr_compile_opts {
  const char *dump_after; /* pass name: print the IR after it to `dump` and stop there */
  FILE *dump;
  bool stop_before_codegen;
  bool no_transfer;       /* skip the freeze pass: everything trainable, batchnorm in train mode */
  int phase;              /* gradual unfreezing: compile this phase (0-based) of the plan's phases */
  gr_codegen_opts cg;
} gr_compile_opts;

typedef struct gr_compiled {
  gr_arena arena;
  gr_diag *diag;
  gr_plan plan;
  gr_model model;      /* the forward graph for training */
  gr_model eval_model; /* for evaluation: the same as model, or its twin when batchnorm makes them differ */
  gr_graph *g;
  gr_value *labels, *loss, *dloss, *eval_loss;
  /* domain adaptation (NULL without): domain labels, the head's output in training and evaluation,
   * and the label and domain losses (loss is their sum) */
  gr_value *dom_in, *dom_labels, *dom_out, *eval_dom_out, *label_loss, *dom_loss; /* dom_in: the features the head reads */
  gr_program train, eval;
  const gr_value *cut;               /* the feature cache's input (NULL: no cache), see passes.c */
  gr_program features, train_cached; /* with a cut: the frozen prefix up to it; training from it */
  gr_rt_model rt;
  gr_jit *jit;
  int n_folded; /* frozen batchnorms folded into their convolutions (fold.c) */
} gr_compiled;

bool gr_compile_plan(const char *plan_path, gr_diag *d, const gr_compile_opts *o, gr_compiled *c);
void gr_compiled_free(gr_compiled *c);

/* api_plan.c: a plan compiled whole, as graft_open_plan (include/graft.h) and graft compile (aot.c)
 * need it: every phase of gradual unfreezing (c[k] for phase k) and the run they make. */
typedef struct gr_plan_build {
  int n;
  gr_compiled c[GR_MAX_PHASES];
  gr_run run;
} gr_plan_build;
bool gr_build_plan(const char *plan, gr_diag *d, const gr_compile_opts *o, gr_plan_build *b);
/* The rest of gr_build_plan, for a caller that compiled phase 0 into b->c[0] itself (b->n == 1): the
 * later phases and the run. On failure b is freed. */
bool gr_build_phases(const char *plan, gr_diag *d, const gr_compile_opts *o, gr_plan_build *b);
void gr_plan_build_free(gr_plan_build *b);
/* The plan's init weights (with its renaming and exclusions) loaded into s, a session of phase 0;
 * true without an init. */
bool gr_plan_init_weights(gr_plan_build *b, gr_session *s, gr_diag *d);
/* The plan's init mapping as the runtime's load options (allocated in c's arena). */
gr_load_opts gr_plan_load_opts(gr_compiled *c);

/* aot.c: graft compile — the plan's every phase into OUT/<name>.o, OUT/lib<name>.a and OUT/<name>.h
 * (see the file). */
typedef struct gr_aot_opts {
  const char *out_dir;
  const char *name;            /* the artifact's C name (NULL: the model's) */
  const char *cpu, *features;  /* the target (NULL: the host's CPU and features) */
  gr_codegen_opts cg;
  FILE *log;                   /* a line saying what was written (NULL: none) */
} gr_aot_opts;
bool gr_aot_compile(const char *plan, const gr_aot_opts *o, gr_diag *d);

#endif
