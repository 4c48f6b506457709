/* graft.h — graft's C API: train, evaluate and run a compiled training plan from another program.
 *
 * A graft_model is a plan compiled for this machine, with its parameters and optimizer state. There
 * are two ways to get one:
 *
 *   graft_open_plan("plan.yaml", &opts, &m)    compiles the plan and its model with LLVM now
 *                                              (link with `pkg-config --libs graft`)
 *   graft_open_artifact(&mynet_graft, &opts, &m)  a plan that `graft compile plan.yaml -o DIR` compiled
 *                                              ahead of time: include DIR/mynet.h, link DIR/libmynet.a
 *                                              and graft's runtime only (`pkg-config --libs graft-runtime`):
 *                                              no LLVM, no libyaml, no plan or model files at run time
 *
 * Either way the model starts from the plan's initial weights (its `init` file with the plan's
 * renaming and exclusions, the rest initialised from the plan's seed) and trains as `graft train`
 * would: the same optimizer, learning-rate schedule, phases of gradual unfreezing and batch order, so
 * a program that feeds it the same data gets the same weights, bit for bit.
 *
 *   #include <graft.h>
 *
 *   graft_model *m;
 *   if (graft_open_plan("plan.yaml", NULL, &m) != GRAFT_OK) return 1;  // diagnostics went to stderr
 *   for (int64_t e = 0; e < graft_epochs(m); e++) {
 *     float loss;
 *     if (graft_train_epoch(m, x, labels, n, &loss) != GRAFT_OK) break;  // x: n * graft_input_numel(m) floats
 *     double test_loss, acc;
 *     graft_evaluate(m, tx, tlabels, tn, &test_loss, &acc);
 *     printf("epoch %lld: loss %.4f, test accuracy %.4f\n", (long long)e + 1, loss, acc);
 *   }
 *   graft_save(m, "trained.safetensors");
 *   graft_close(m);
 *
 * Conventions: every function that can fail returns a graft_status and reports the details through
 * the diagnostics callback (by default printed to stderr as `file:line:col: error: ...`); the library
 * never exits or prints on its own otherwise. Samples are float32 rows of graft_input_numel values (or
 * int32 token ids for a model whose input is integer); targets are int32 class labels, or
 * graft_target_numel float32 values per sample for losses on values. A model is not thread-safe: use
 * one from one thread at a time (graft's thread pool runs a call's kernels on several); open plans
 * (graft_open_plan) from one thread at a time. */
#ifndef GRAFT_H
#define GRAFT_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GRAFT_VERSION_MAJOR 0
#define GRAFT_VERSION_MINOR 1
#define GRAFT_VERSION_PATCH 0

typedef enum graft_status {
  GRAFT_OK = 0,
  GRAFT_ERR_ARGUMENT,    /* a NULL pointer, a batch larger than the model's, a count out of range */
  GRAFT_ERR_INPUT,       /* the plan, its model, a weights file or a label is wrong (the diagnostics say where) */
  GRAFT_ERR_IO,          /* a file cannot be written (one that cannot be read is GRAFT_ERR_INPUT) */
  GRAFT_ERR_MEMORY,      /* out of memory */
  GRAFT_ERR_NUMERIC,     /* a training step made the loss NaN or infinite (the step's updates stay) */
  GRAFT_ERR_UNSUPPORTED, /* the plan uses something this API does not do (domain adaptation) */
  GRAFT_ERR_CPU          /* an artifact compiled for CPU features this machine lacks */
} graft_status;

/* A short name for a status ("ok", "invalid argument", ...). */
const char *graft_status_string(graft_status s);

typedef enum graft_diag_kind { GRAFT_DIAG_ERROR, GRAFT_DIAG_WARNING, GRAFT_DIAG_NOTE } graft_diag_kind;
/* Receives each diagnostic: file may be NULL, line and col 0 when unknown (col 0 for binary files). */
typedef void (*graft_diag_fn)(void *user, graft_diag_kind kind, const char *file, int line, int col, const char *message);

typedef struct graft_options {
  graft_diag_fn diag;    /* NULL: print diagnostics to stderr */
  void *diag_user;
  int threads;           /* threads for kernels and GEMMs (0: as the process has them, by default every
                            core); graft's thread pool is the whole process's, so this applies to every model */
  const char *cache_dir; /* graft_open_plan: the kernel cache (NULL: as graft train has it) */
  int no_cache;          /* graft_open_plan: compile everything, no kernel cache */
} graft_options;

/* What `graft compile` generates for a plan: the generated header declares one of these per plan
 * (named after the model) and the generated library defines it. Treat it as opaque. */
typedef struct graft_artifact {
  uint32_t magic, abi;
  const char *name;
  const unsigned char *desc;
  uint64_t desc_size;
  void (*const *steps)(unsigned char *slab, unsigned char *arena, int64_t n, const float *scalars);
  uint64_t n_steps;
  const unsigned char *init;
  uint64_t init_size;
} graft_artifact;

typedef struct graft_model graft_model;

/* Compiles a plan (YAML) with LLVM. Not in the runtime-only library. */
graft_status graft_open_plan(const char *plan_path, const graft_options *opts, graft_model **out);
/* Opens a plan compiled ahead of time; checks that this CPU has the features it was compiled for. */
graft_status graft_open_artifact(const graft_artifact *a, const graft_options *opts, graft_model **out);
void graft_close(graft_model *m); /* NULL is fine */

/* The message of the model's last error ("" if none). */
const char *graft_last_error(const graft_model *m);

/* Sizes: values per input sample; classes (output values per sample); the largest batch a step
 * takes (the plan's batch_size); 0 when targets are int32 class labels, else float targets per sample. */
int64_t graft_input_numel(const graft_model *m);
int64_t graft_classes(const graft_model *m);
int64_t graft_max_batch(const graft_model *m);
int64_t graft_target_numel(const graft_model *m);
/* Where training is: the plan's epochs (all phases), epochs completed, optimizer steps taken, the
 * phases of gradual unfreezing (1 without) and the current one (0-based), and the learning rate the
 * next step takes. */
int64_t graft_epochs(const graft_model *m);
int64_t graft_epoch(const graft_model *m);
int64_t graft_step(const graft_model *m);
int graft_phases(const graft_model *m);
int graft_phase(const graft_model *m);
double graft_learning_rate(const graft_model *m);

/* One epoch over n samples, batched and shuffled as `graft train` does (the plan's seed; the same
 * order every run), then graft_end_epoch. *loss (may be NULL): the epoch's mean training loss. The
 * training set must keep its size from epoch to epoch. */
graft_status graft_train_epoch(graft_model *m, const void *x, const void *y, int64_t n, float *loss);
/* One optimizer step on a batch of n <= graft_max_batch samples. Per-step learning-rate schedules need
 * the number of steps in an epoch: graft_train_epoch sets it, or call graft_set_train_size first. */
graft_status graft_train_step(graft_model *m, const void *x, const void *y, int64_t n, float *loss);
graft_status graft_set_train_size(graft_model *m, int64_t n);
/* Ends an epoch of graft_train_step calls: epoch-wise schedules advance, and after a phase's last
 * epoch the next phase begins (its own trainable set, the same parameters). */
graft_status graft_end_epoch(graft_model *m);

/* Mean loss and accuracy (NaN for a regression) over n samples, in batches. */
graft_status graft_evaluate(graft_model *m, const void *x, const void *y, int64_t n, double *loss, double *accuracy);
/* The model's outputs (n * graft_classes floats: logits for classifiers) for n samples. */
graft_status graft_predict(graft_model *m, const void *x, int64_t n, float *out);

/* Parameters (and batchnorm statistics) to and from a safetensors file, by name; saving is atomic. */
graft_status graft_save(graft_model *m, const char *path);
graft_status graft_load(graft_model *m, const char *path);

#ifdef __cplusplus
}
#endif
#endif
