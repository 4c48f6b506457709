/* model.h — the contract between compiled code and the runtime. The compiler (JIT) or a generated
 * header (AOT, later) fills a gr_rt_model; the runtime needs nothing else to train, evaluate or
 * predict, and so has no LLVM dependency.
 *
 * A step function runs one compiled program over one batch of n samples (1 <= n <= max_batch):
 *   slab    persistent memory: parameters, then optimizer state (zeroed at start)
 *   arena   the program's planned scratch memory: inputs, activations, gradients
 *   scalars run-time scalars (GR_SCALAR_*: learning rate, step number)
 * It never allocates. */
#ifndef GRAFT_MODEL_H
#define GRAFT_MODEL_H
#include <stdbool.h>
#include <stdint.h>
#include "ir/ir.h"

typedef void (*gr_step_fn)(uint8_t *slab, uint8_t *arena, int64_t n, const float *scalars);

/* scalars[]: the learning rate, the 1-based number of the optimizer step being taken (Adam's bias
 * correction), a fresh random seed below 2^24 for the step (dropout masks), and the gradient
 * reversal factor lambda (grad_reverse: backward multiplies by -lambda; 1 outside domain adaptation) */
enum { GR_SCALAR_LR, GR_SCALAR_STEP, GR_SCALAR_SEED, GR_SCALAR_LAMBDA, GR_SCALAR_COUNT };
/* then one learning rate per parameter group k: scalars[GR_SCALAR_COUNT + k] = lr * lr_mult[k];
 * then, for gradual unfreezing, the 1-based step count since phase j began, for j = 1 .. phases - 1:
 * scalars[GR_SCALAR_PHASE_STEP + j - 1] (Adam's bias correction of a parameter first trained in phase
 * j counts its own steps, as torch.optim's per-parameter state does) */
enum { GR_MAX_GROUPS = 32, GR_MAX_PHASES = 16 };
enum { GR_SCALAR_PHASE_STEP = GR_SCALAR_COUNT + GR_MAX_GROUPS, GR_SCALAR_TOTAL = GR_SCALAR_PHASE_STEP + GR_MAX_PHASES };

/* Accuracy: the output's arg-max equals the class label (cross-entropy); the sign of each logit
 * agrees with its target being >= 0.5, counted per element (binary cross-entropy); none (regression). */
typedef enum { GR_ACC_ARGMAX, GR_ACC_BINARY, GR_ACC_NONE } gr_accuracy;

typedef struct gr_rt_param {
  const char *name;
  int64_t offset; /* bytes into the slab */
  gr_shape shape;
  int64_t numel;
  float init_bound; /* U(-b, b); 0: every element init_value */
  float init_value;
  float init_std;   /* > 0: N(0, std^2) instead (embeddings) */
  int64_t zero_row; /* this row (along dimension 0) starts at 0 (an embedding's padding row); -1: none */
  bool trainable;   /* trained by this model's program (false: frozen, or a buffer) */
  bool buffer;      /* model state that is never trained (batchnorm running statistics): saved and loaded */
  gr_loc loc;       /* where the model file declares its layer (for messages; may be empty) */
} gr_rt_param;

typedef struct gr_rt_program {
  const char *name;
  gr_step_fn fn;
  int64_t arena_bytes;
  int64_t x_off, y_off; /* batch inputs and targets (bytes into the arena; -1: absent) */
  int64_t dloss_off;    /* seed gradient d(loss)/d(loss), set to 1 once (-1: absent) */
  int64_t loss_off;     /* scalar mean loss of the batch */
  int64_t out_off;      /* model output [n, classes] (-1: not kept) */
  const int64_t *grad_off; /* training programs: each parameter's gradient after a step (-1: none); else NULL */
  /* domain adaptation (-1 without): the domain labels (int32 [n], source 0, target 1), the domain
   * head's output [n, 2], and the two losses that add up to the training loss */
  int64_t dom_y_off, dom_out_off, label_loss_off, dom_loss_off;
} gr_rt_program;

typedef struct gr_rt_model {
  gr_dtype dtype;
  int64_t max_batch;
  int64_t slab_bytes;
  int n_params;
  gr_rt_param *params;
  gr_shape in_shape;    /* [N, ...] */
  int64_t sample_numel; /* input elements per sample */
  gr_dtype in_dtype;    /* GR_F32 values, or GR_I32 indices (token ids, read by embeddings) */
  int64_t in_limit;     /* GR_I32 input: every index must be in [0, in_limit) */
  int64_t n_classes;    /* output values per sample (the classes of a classifier) */
  int64_t target_numel; /* 0: targets are class labels (I32 [N], each below n_classes); else F32 values per sample */
  gr_accuracy accuracy; /* how accuracy counts a sample (or an element) as correct */
  int n_states;         /* optimizer state (momentum buffers, Adam moments), by name: carried across phases */
  gr_rt_param *states;
  int n_groups;         /* parameter groups with their own learning rate (discriminative fine-tuning) */
  double lr_mult[GR_MAX_GROUPS];
  gr_rt_program train, eval;
  bool domain;          /* domain adaptation: the programs have the dom_* slots */
  /* The feature cache (feat_numel > 0): when the start of the training forward pass is frozen and
   * deterministic, `features` computes its output (feat_numel floats per sample, written at out_off)
   * from the input once per sample, and `train_cached` trains from it (read at x_off) instead of
   * `train`, if the cache for the whole training set fits in cache_budget bytes, or else (with
   * cache_spill) in a file in cache_dir (NULL: $TMPDIR or /tmp). */
  int64_t feat_numel, cache_budget;
  bool cache_spill;
  const char *cache_dir;
  gr_rt_program features, train_cached;
} gr_rt_model;

#endif
