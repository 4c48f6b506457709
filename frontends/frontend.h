/* frontend.h — the YAML frontends: a model file becomes a forward IR graph; a plan file becomes a
 * gr_plan. Both report gcc-style diagnostics (see docs/format.md for the schemas) and return false
 * after reporting; nothing is half-built on success. */
#ifndef GRAFT_FRONTEND_H
#define GRAFT_FRONTEND_H
#include <stdbool.h>
#include <stdint.h>
#include "ir/ir.h"
#include "runtime/image.h"
#include "runtime/schedule.h"

typedef struct gr_model {
  const char *path;
  const char *name;
  gr_value *input;  /* [N, ...] the per-sample input */
  gr_value *output; /* the model's output, e.g. logits [N, classes] */
  gr_loc input_loc, output_loc;
  int n_layers;
  bool mode_dependent;      /* has layers that differ between training and evaluation (batchnorm) */
  const char **layer_names; /* in order */
  const char **layer_ops;
  gr_value **layer_outputs;
  gr_loc *layer_locs;
} gr_model;

/* Builds the forward graph of the model at `path` into g, for training or for evaluation (batchnorm
 * with running statistics). A second build into the same graph shares the first one's input and
 * parameters by name: that is how the evaluation twin of a mode-dependent model is made. `from` is
 * where the plan names the model file: a file that cannot be opened is reported there. */
typedef enum { GR_MODE_TRAIN, GR_MODE_EVAL, GR_MODE_COUNT } gr_model_mode;
bool gr_model_load(const char *path, gr_loc from, gr_graph *g, gr_model_mode mode, gr_model *out);
/* Builds the list of layers at root[section][key] of the YAML file `path` (a plan's domain head),
 * in the model format, on x: parameters are named prefix + layer name ("domain.fc1.weight") and, as
 * with gr_model_load, a second build (mode eval) shares the first one's. *out gets the last layer's
 * output and *loc its place. False after reporting. */
bool gr_model_head(const char *path, const char *section, const char *key, const char *prefix, gr_graph *g, gr_model_mode mode,
                   gr_value *x, gr_value **out, gr_loc *loc);

typedef struct gr_data_split {
  bool present;
  const char *images, *labels; /* resolved paths (tensors format: the file is `images`; images: the folder) */
  gr_loc loc, images_loc, labels_loc;
} gr_data_split;

typedef enum { GR_DATA_IDX, GR_DATA_TENSORS, GR_DATA_IMAGES, GR_DATA_FORMAT_COUNT } gr_data_format; /* = GR_FORMAT_* */
extern const char *const gr_data_format_names[GR_DATA_FORMAT_COUNT + 1];

typedef enum { GR_LOSS_CROSS_ENTROPY, GR_LOSS_BCE_LOGITS, GR_LOSS_MSE, GR_LOSS_COUNT } gr_loss_kind;
typedef enum { GR_OPT_SGD, GR_OPT_ADAM, GR_OPT_ADAMW, GR_OPT_COUNT } gr_opt_kind;
extern const char *const gr_loss_names[GR_LOSS_COUNT + 1];
extern const char *const gr_opt_names[GR_OPT_COUNT + 1];

/* Transfer learning (frontends/transfer.c). A pattern is a glob over parameter and layer names
 * (gr_glob_match), kept with its place in the plan for diagnostics. */
typedef struct gr_pattern {
  const char *glob;
  gr_loc loc;
} gr_pattern;
typedef struct gr_patterns {
  gr_pattern *v;
  int n;
} gr_patterns;

/* batchnorm layers in training: train (batch statistics, running ones updated), frozen (running
 * statistics, not updated), adapt (batch statistics, running ones updated, weight and bias not
 * trained); auto: frozen if its weight and bias are frozen, else train. */
typedef enum { GR_BN_AUTO, GR_BN_TRAIN, GR_BN_FROZEN, GR_BN_ADAPT, GR_BN_MODE_COUNT } gr_bn_mode;
extern const char *const gr_bn_mode_names[GR_BN_MODE_COUNT + 1];
typedef struct gr_bn_rule {
  gr_patterns match;
  gr_bn_mode mode;
  gr_loc loc;
} gr_bn_rule;

/* Discriminative fine-tuning: the parameters a group matches train at lr_mult times the learning
 * rate and weight_decay_mult times the weight decay. */
typedef struct gr_param_group {
  gr_patterns match;
  double lr_mult, wd_mult;
  gr_loc loc;
} gr_param_group;

/* Gradual unfreezing: a phase trains for `epochs` with the parameters its `unfreeze` patterns (and
 * those of the phases before it) added to the trainable set, at lr_mult times the scheduled rate. */
typedef struct gr_phase_spec {
  int64_t epochs;
  gr_patterns unfreeze;
  double lr_mult;
  gr_loc loc;
} gr_phase_spec;

typedef struct gr_transfer {
  int n_rename; /* init rename: file-name prefix -> model-name prefix, first match applies */
  const char **rename_from, **rename_to;
  gr_patterns exclude; /* init exclude: model parameters that start fresh; file tensors ignored */
  gr_patterns freeze, unfreeze;
  gr_bn_rule *bn;
  int n_bn;
  gr_param_group *groups;
  int n_groups;
  gr_phase_spec *phases; /* NULL: one phase, the plan's epochs */
  int n_phases;
} gr_transfer;

/* Domain adaptation (DANN, Ganin & Lempitsky 2015): a domain classifier (`head`, layers as in a
 * model file, written in the plan) reads the output of the model layer `features` through a gradient
 * reversal layer. A training batch is source rows (the plan's data) followed by target rows; the
 * label loss applies to the rows of `label_on`, the domain loss (source 0, target 1) to all. */
enum { GR_STREAM_SOURCE, GR_STREAM_TARGET, GR_STREAM_BOTH, GR_STREAM_COUNT };
extern const char *const gr_stream_names[GR_STREAM_COUNT + 1];
typedef struct gr_domain {
  bool present;
  gr_loc loc;
  const char *features; /* the model layer whose output the head reads */
  gr_loc features_loc, head_loc;
  gr_data_split train, test; /* target data (train's labels only needed when the label loss uses them) */
  double source_fraction;    /* of each batch: round(batch_size * it) source rows, at least 1 of each */
  int label_on;              /* GR_STREAM_*: rows the label loss sees */
  gr_loc label_on_loc;
  bool lambda_constant;      /* lambda = lambda_max, or the DANN schedule lambda_max (2 / (1 + exp(-gamma p)) - 1) */
  double lambda_max, lambda_gamma;
} gr_domain;

typedef struct gr_plan {
  const char *path;
  const char *model_path; /* resolved relative to the plan */
  gr_loc model_loc;
  const char *init_path; /* safetensors to load, or NULL */
  gr_loc init_loc;
  gr_transfer tl;        /* init rename/exclude, freezing, batchnorm policy, parameter groups */
  gr_data_format data_format;
  gr_data_split train, test;
  bool shuffle;
  gr_loc data_loc;
  int n_select;             /* data classes: keep only these labels, renumbered 0 .. n_select - 1 */
  int32_t *select;
  gr_loc select_loc;
  int64_t per_class;        /* data per_class: the first this many training samples of each class (0: all) */
  gr_loc per_class_loc;
  gr_pixels pixels;  /* input = (pixel/255 - mean[c]) / std[c]; image folders: resize, random_crop, flip */
  int n_norm;        /* normalize: how many means (and stds) were given: 1 (all channels) or one per channel */
  gr_loc norm_loc;
  gr_loss_kind loss;
  double label_smoothing; /* cross_entropy: in [0, 1) */
  gr_loc loss_loc;
  struct {
    gr_opt_kind kind;
    double lr, momentum, weight_decay;
    bool nesterov;
    double beta1, beta2, eps;
    double clip_grad_norm; /* 0: no clipping */
    gr_loc loc;
  } opt;
  gr_schedule schedule;
  int64_t batch_size, epochs, log_every, eval_every;
  bool feature_cache;         /* feature_cache: auto or memory (true), or off */
  bool feature_cache_spill;   /* auto: over the budget, the cache goes to a file */
  int64_t feature_cache_mb;   /* its memory budget */
  const char *feature_cache_dir; /* where the file goes (NULL: $TMPDIR or /tmp) */
  bool fold_batchnorm;        /* fold frozen batchnorms into their convolutions (compiler/fold.c) */
  struct {
    const char *dir;          /* NULL: no checkpoints */
    int64_t every_steps, keep;
    bool every_epoch;
    gr_loc loc;
  } ckpt;
  int on_nan;                 /* GR_NAN_*: stop, skip or rollback */
  gr_domain domain;           /* domain_adaptation (present: on) */
  uint64_t seed;
  gr_loc batch_loc;
} gr_plan;

bool gr_plan_load(const char *path, gr_arena *a, gr_diag *d, gr_plan *out);

/* transfer.c: the plan's init mapping ({file, rename, exclude}) and its freeze, unfreeze, batchnorm
 * and param_groups keys, into p (called by gr_plan_load). */
struct gr_ydoc;
struct yaml_node_s;
bool gr_parse_init(struct gr_ydoc *y, struct yaml_node_s *init, gr_plan *p);
bool gr_parse_transfer(struct gr_ydoc *y, struct yaml_node_s *root, gr_plan *p);

#endif
