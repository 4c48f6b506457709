/* runtime.h — graft's runtime: everything needed to train and evaluate a compiled model (gr_rt_model)
 * on data, with no dependency on LLVM or the YAML frontends (ahead-of-time programs link it alone). */
#ifndef GRAFT_RUNTIME_H
#define GRAFT_RUNTIME_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "ir/diag.h"
#include "runtime/image.h"
#include "runtime/model.h"
#include "runtime/schedule.h"

/* rng.c — xoshiro256** seeded through splitmix64: fast, reproducible across machines. */
typedef struct gr_rng {
  uint64_t s[4];
} gr_rng;
void gr_rng_seed(gr_rng *r, uint64_t seed);
uint64_t gr_rng_next(gr_rng *r);
double gr_rng_uniform(gr_rng *r);                 /* [0, 1) */
double gr_rng_normal(gr_rng *r);                  /* N(0, 1) */
uint64_t gr_rng_below(gr_rng *r, uint64_t bound); /* [0, bound), unbiased */
void gr_rng_shuffle(gr_rng *r, int64_t *a, int64_t n);

/* data.c — a data set in memory, decoded once so that a step only gathers rows: samples (floats,
 * already normalised, or int32 indices) and targets (int32 class labels, or floats), all 4 bytes wide.
 * An image folder (imageset.c) is the exception: its samples are files, decoded batch by batch. */
typedef struct gr_images gr_images;
typedef struct gr_dataset {
  int64_t n, sample_numel, target_numel;
  void *x; /* [n, sample_numel] float or int32, as the model's input (NULL for image files) */
  void *y; /* [n, target_numel] int32 labels (target_numel 1) or float targets, as the model's loss */
  gr_images *img; /* image files, when the samples are those */
  const char *images_path, *labels_path;
} gr_dataset;
/* Loads an IDX image file and its IDX label file; input = (pixel/255 - mean) / std (px's channel 0). Checks that
 * the counts agree, that a sample has the model's input size, and that every label is one of its
 * classes (or, for a loss on float targets of one value, used as that value); each problem is
 * reported naming the file (and byte offset). */
bool gr_dataset_load_idx(gr_dataset *ds, const char *images, const char *labels, const gr_pixels *px, const gr_rt_model *m,
                         gr_diag *d);
/* Loads a safetensors file holding x (F32 [n, ...] samples, or integer indices for a model whose
 * input is integer) and y (integer class labels [n], or F32 targets [n, ...] for losses on values). */
bool gr_dataset_load_tensors(gr_dataset *ds, const char *path, const gr_rt_model *m, gr_diag *d);
/* A subset of a labelled data set: only the samples whose label is in classes[] (renumbered to its
 * index there), and of those at most per_class of each class, the first in file order (0: all). */
typedef struct gr_data_select {
  int n_classes; /* 0: every label */
  const int32_t *classes;
  int64_t per_class;
} gr_data_select;
/* Either, by format: 0 idx (images, labels), 1 tensors (images is the file), 2 an image folder
 * (images is the folder); then the selection (NULL: everything). */
enum { GR_FORMAT_IDX, GR_FORMAT_TENSORS, GR_FORMAT_IMAGES };
bool gr_dataset_load(gr_dataset *ds, int format, const char *images, const char *labels, const gr_pixels *px,
                     const gr_rt_model *m, const gr_data_select *sel, gr_diag *d);
/* Samples without targets (graft predict): an IDX image file (format 0) or a tensors file's x
 * (format 1); the targets are zeros. */
bool gr_dataset_load_inputs(gr_dataset *ds, int format, const char *path, const gr_pixels *px, const gr_rt_model *m, gr_diag *d);
void gr_dataset_free(gr_dataset *ds);
/* Fills x (n samples of ds->sample_numel 4-byte values) with samples idx[0..n): rows of memory, or
 * decoded images (augmented, with random crops and flips from seed, when `augment`). False after
 * reporting a file that cannot be decoded. */
bool gr_dataset_samples(const gr_dataset *ds, const int64_t *idx, int64_t n, bool augment, uint64_t seed, void *x, gr_diag *d);
/* Starts preparing the batch a later gr_dataset_samples with the same arguments will ask for (image
 * folders: on the worker thread; otherwise nothing). */
void gr_dataset_prefetch(const gr_dataset *ds, const int64_t *idx, int64_t n, bool augment, uint64_t seed);

/* imageset.c — an image folder: the sorted sub-folders of dir are the classes 0, 1, ... and their
 * PNG and JPEG files (sorted by name) the samples. The model input must be [N, C, H, W] with C 1 or
 * 3; images are converted to C channels, resized as px says and cropped to H x W. */
bool gr_dataset_load_images(gr_dataset *ds, const char *dir, const gr_pixels *px, const gr_rt_model *m, gr_diag *d);
/* Loose image files without labels (graft predict). */
bool gr_dataset_load_image_files(gr_dataset *ds, const char *const *paths, int64_t n, const gr_pixels *px, const gr_rt_model *m,
                                 gr_diag *d);
/* The names of dir's entries that keep() accepts (hidden ones never), in byte order, malloc'd; NULL
 * (errno set) if dir cannot be read. */
char **gr_list_dir(const char *dir, bool (*keep)(const char *name, bool is_dir, const void *user), const void *user, int64_t *count);
/* An image folder's class names alone (its sorted sub-folders), without listing their files; NULL
 * after reporting when it cannot be read or has none. */
char **gr_image_classes(const char *dir, int64_t *n, gr_diag *d);
void gr_image_classes_free(char **names, int64_t n);
int gr_dataset_class_count(const gr_dataset *ds);                /* an image folder's classes (0 otherwise) */
const char *gr_dataset_class_name(const gr_dataset *ds, int k);  /* class k's folder name, or NULL */
const char *gr_dataset_sample_path(const gr_dataset *ds, int64_t i); /* the file of an image sample, or NULL */
void gr_dataset_keep_images(gr_dataset *ds, const int64_t *keep, int64_t n); /* only these files, in this order */
bool gr_dataset_images_batch(const gr_dataset *ds, const int64_t *idx, int64_t n, bool augment, uint64_t seed, float *x, gr_diag *d);
void gr_images_free(gr_images *im);

/* metrics.c — JSON lines, one object per record, flushed as written. */
typedef struct gr_metrics gr_metrics;
gr_metrics *gr_metrics_open(const char *path, bool append, gr_diag *d); /* append: a resumed run adds to its file */
void gr_metrics_close(gr_metrics *m);
/* Writes {"split": split, k1: v1, ...}: keys with integer values end in '#' in the fmt list, e.g.
 * gr_metrics_record(m, "train", "epoch#", 1.0, "loss", 0.5, NULL). */
void gr_metrics_record(gr_metrics *m, const char *split, ...);

/* progress.c — a live line on a terminal (step, loss, throughput, ETA), plain lines otherwise. */
typedef struct gr_progress {
  FILE *out;
  bool tty;
  double last_draw;
  int width;
} gr_progress;
void gr_progress_init(gr_progress *p, FILE *out);
/* total_steps: steps in this epoch; loss: running mean. */
void gr_progress_step(gr_progress *p, int64_t epoch, int64_t epochs, int64_t step, int64_t steps, double loss,
                      double samples_per_s, double eta_s, bool force);
void gr_progress_clear(gr_progress *p);
double gr_now(void); /* monotonic seconds */

/* How to read weights into a model (weights.c, below): the file's tensors renamed by prefix; model
 * parameters matching an exclude pattern keep their initialisation. */
typedef struct gr_load_opts {
  int n_rename;
  const char *const *rename_from, *const *rename_to; /* file-name prefix -> model-name prefix */
  int n_exclude;
  const char *const *exclude; /* patterns (gr_glob_match) */
} gr_load_opts;

/* train.c — the training loop. */
/* On a step whose loss is NaN or infinite: stop the run with an error naming the first parameter
 * whose gradient (or value) is not finite; skip the step (its updates undone); or roll back to the
 * last checkpoint and go on at half the learning rate. */
enum { GR_NAN_STOP, GR_NAN_SKIP, GR_NAN_ROLLBACK, GR_NAN_COUNT };
enum { GR_NAN_MAX_SKIPS = 20, GR_NAN_MAX_ROLLBACKS = 5 }; /* in a row / in a run, before giving up */

typedef struct gr_train_cfg {
  int data_format; /* GR_FORMAT_*: idx, tensors (the file in *_images), images (the folder in *_images) */
  bool shuffle;
  const char *init_path; /* weights to start from (NULL: random initialisation) */
  gr_load_opts init_opts; /* how to map them */
  const char *save_path; /* where to write the trained weights (NULL: nowhere) */
  const char *train_images, *train_labels;
  const char *test_images, *test_labels; /* NULL: no evaluation */
  gr_loc train_loc, test_loc, init_loc;  /* where the plan names them, for notes (may be empty) */
  gr_pixels pixels; /* normalisation (and, for image folders, resizing, cropping, flipping) */
  gr_data_select train_select, test_select; /* subsets of the data sets (zero: all) */
  int64_t batch_size, epochs, log_every;
  int64_t eval_every; /* evaluate after every this many epochs and after the last (0 or 1: every epoch) */
  uint64_t seed;
  double lr;                /* the base learning rate */
  gr_schedule schedule;     /* how it changes (zero: constant) */
  const char *metrics_path; /* NULL: none */
  int threads;              /* 0: OpenBLAS default */
  FILE *log;                /* progress and summaries (stdout) */
  const char *ckpt_dir;     /* checkpoints go here (NULL: none) */
  int64_t ckpt_every_steps; /* a checkpoint every this many steps (0: not by steps) */
  bool ckpt_every_epoch;    /* and/or after every epoch */
  int ckpt_keep;            /* the newest this many stay */
  const char *resume;       /* a checkpoint file, or a directory of them, to continue from (NULL: a fresh run) */
  int on_nan;               /* GR_NAN_*: what a step with a non-finite loss does */
  int rollbacks;            /* on_nan rollback: how many this run has made already (0 at the start) */
  bool quiet;               /* no progress lines, only per-epoch summaries */
  /* domain adaptation (for a model with m->domain): the target data, in the source's format and
   * normalisation; labels of the training part may be NULL (unlabelled) */
  const char *target_images, *target_labels, *target_test_images, *target_test_labels;
  gr_loc target_loc, target_test_loc;
  double source_fraction;  /* of each batch's rows: source; the rest target */
  int label_on;            /* rows the label loss sees: 0 source, 1 target, 2 both (frontend.h GR_STREAM_*) */
  bool lambda_constant;    /* lambda = lambda_max; else lambda_max (2 / (1 + exp(-lambda_gamma p)) - 1), p the run's progress */
  double lambda_max, lambda_gamma;
} gr_train_cfg;

typedef struct gr_train_result {
  int64_t steps;
  double final_train_loss;
  double test_loss, test_accuracy; /* of the last epoch; NaN without test data */
  double samples_per_s;            /* training throughput, whole run */
  double target_accuracy, domain_accuracy; /* domain adaptation, last epoch: on the target test set; the domain head on both test sets */
} gr_train_result;

typedef struct gr_session gr_session; /* parameters + arenas of one model */
/* Allocates the slab and arenas and initialises parameters; NULL after reporting if memory is short. */
gr_session *gr_session_new(const gr_rt_model *m, uint64_t seed, gr_diag *d);
/* The same with the parameters copied from image, a slab's bytes up to the end of its last
 * parameter (graft compile's initial weights), instead of initialised. */
gr_session *gr_session_new_from(const gr_rt_model *m, const uint8_t *image, gr_diag *d);
size_t gr_params_end(const gr_rt_model *m); /* the slab's bytes up to the end of its last parameter */
void gr_session_free(gr_session *s);
/* Runs the eval program over a data set: mean loss and accuracy; with `outputs` (ds->n x classes
 * floats), also the model's output for every sample. False after reporting an image that cannot be
 * decoded. */
bool gr_session_evaluate(gr_session *s, const gr_dataset *ds, double *loss, double *accuracy, float *outputs, gr_diag *d);
/* The same for a model with a domain head: also counts the samples the head assigns to `domain` (0
 * source, 1 target) into *dom_correct. */
bool gr_session_evaluate_domain(gr_session *s, const gr_dataset *ds, int domain, double *loss, double *accuracy, int64_t *dom_correct,
                                gr_diag *d);
/* Domain adaptation's source rows in a batch of B: round(B * fraction), at least 1, at most B - 1. */
int64_t gr_source_rows(int64_t B, double fraction);
/* The gradient reversal factor of domain adaptation at progress p in [0, 1] (see gr_train_cfg). */
double gr_dann_lambda(const gr_train_cfg *cfg, double p);
const gr_rt_model *gr_session_model(const gr_session *s);
float *gr_session_param(gr_session *s, int i); /* the i-th parameter's values in the slab */
uint8_t *gr_session_slab(gr_session *s);       /* the slab: parameters, then optimizer state */
uint8_t *gr_session_arena(gr_session *s);      /* the training program's arena */
float *gr_session_state(gr_session *s, int i); /* the i-th optimizer state tensor's */
/* weights.c — parameters from/to safetensors by name (strict); false after reporting. The options
 * (NULL: none) rename the file's tensors by prefix and exclude model parameters by pattern (they keep
 * their initialisation; file tensors of those names are ignored). With `report`, a line saying what
 * was loaded. */
bool gr_session_load(gr_session *s, const char *path, const gr_load_opts *o, FILE *report, gr_diag *d);
bool gr_session_save(gr_session *s, const char *path, gr_diag *d);
/* fault.c — tests only: GRAFT_FAULT=POINT:N kills the process (SIGKILL) the N-th time it passes POINT. */
void gr_fault(const char *point);

/* checkpoint.c — where a run is, as a checkpoint records it (see the file for the format). */
typedef struct gr_ckpt_pos {
  int phase;               /* the phase the run is in (0-based) */
  int64_t epoch;           /* epochs completed */
  int64_t batch;           /* batches done in the next epoch (0: at an epoch boundary) */
  int64_t step;            /* optimizer steps taken */
  int64_t phase_start[GR_MAX_PHASES]; /* the step at which each phase began */
  int n_phases;
  uint64_t seed;           /* the run's, for checking on resumption: */
  int64_t batch_size, samples;
} gr_ckpt_pos;
/* Writes DIR/step-<step>.safetensors atomically (creating DIR), then deletes all but the `keep`
 * newest; refuses (an error) while a parameter is not finite. A line on `log` says where it went. */
bool gr_checkpoint_write(gr_session *s, const char *dir, const gr_ckpt_pos *pos, int keep, FILE *log, gr_diag *d);
/* Opens the checkpoint at path, or the newest one in the directory path that reads whole (a damaged
 * one is skipped with a warning), checking its checksum; *used gets the file's path (malloc'd). */
struct gr_st_file;
bool gr_checkpoint_open(const char *path, struct gr_st_file *f, gr_ckpt_pos *pos, char **used, FILE *log, gr_diag *d);
/* Copies the checkpoint's parameters and optimizer state into s (state it lacks starts at zero). */
bool gr_checkpoint_restore(gr_session *s, const struct gr_st_file *f, gr_diag *d);

/* Puts samples idx[0..n) of ds into the program's input slots and their targets into its target
 * slots (4-byte values: floats or int32s); image samples are decoded, augmented with `augment`. False
 * after reporting a sample that cannot be decoded (never for samples in memory). */
bool gr_gather(const gr_rt_program *p, uint8_t *arena, const gr_dataset *ds, const int64_t *idx, int64_t n, bool augment, uint64_t seed,
               gr_diag *d);
/* The learning rate of a training step: the schedule's at the step (per-step schedules, over
 * steps_per_epoch * epochs) or at the epochs done (per-epoch ones, over epochs), times the phase's mult. */
double gr_run_lr(const gr_schedule *s, double lr, int64_t step, int64_t epochs_done, int64_t steps_per_epoch, int64_t epochs, double mult);
/* A run's random generators from its seed: the batch order (each epoch shuffles the previous epoch's
 * order again) and the dropout seeds (one draw per step). */
void gr_run_rngs(uint64_t seed, gr_rng *order, gr_rng *drop);
/* The run-time scalars of a training step (GR_SCALAR_*, model.h): learning rate lr (and each
 * parameter group's), `step` optimizer steps taken before it, in phase ph (0-based) of a run whose
 * phase j began after phase_start[j] steps, a dropout seed drawn from drop_rng, and lambda. */
void gr_step_scalars(float *scal, const gr_rt_model *m, double lr, int64_t step, int ph, const int64_t *phase_start, gr_rng *drop_rng,
                     double lambda);
/* The session of the next phase (model m): the previous one's parameters and optimizer state copied
 * by name (state a parameter did not have yet starts at zero); the previous session is freed. NULL
 * after reporting, the previous session kept. */
gr_session *gr_session_next_phase(gr_session *old, const gr_rt_model *m, uint64_t seed, gr_diag *d);

/* Trains (and evaluates after each epoch); false after reporting an error. */
bool gr_train(const gr_rt_model *m, const gr_train_cfg *cfg, gr_diag *d, gr_train_result *res);
/* Gradual unfreezing: the phases run in order on one data set, each with its own compiled model (the
 * same parameters, another trainable set); parameters and optimizer state carry over by name. The
 * learning rate of a phase is the schedule's (over all phases' epochs) times its lr_mult.
 * cfg->epochs is ignored: the phases' epochs add up to the run. */
typedef struct gr_train_phase {
  const gr_rt_model *m;
  int64_t epochs;
  double lr_mult;
} gr_train_phase;
bool gr_train_phases(const gr_train_phase *phases, int n_phases, const gr_train_cfg *cfg, gr_diag *d, gr_train_result *res);

/* A compiled plan's run as the embedding API (api.c) drives it: its phases (one without gradual
 * unfreezing) and what training takes from the plan beyond the compiled models. */
typedef struct gr_run {
  int n_phases;
  gr_train_phase phases[GR_MAX_PHASES];
  uint64_t seed;
  bool shuffle;
  double lr;            /* the base learning rate */
  gr_schedule schedule; /* how it changes */
} gr_run;

/* pool.c — the thread pool. gr_parallel runs fn(ctx, p, parts) for p < parts (< 2^31) across the pool
 * and the caller, returning when all are done; nested calls run inline. gr_set_threads sets the pool's
 * size and OpenBLAS's (0: every CPU this process may use); gr_threads is the size in effect. */
typedef void (*gr_task_fn)(void *ctx, int64_t part, int64_t parts);
void gr_parallel(gr_task_fn fn, void *ctx, int64_t parts);
/* gr_parallel_for: the generated code's parallel loops (compiler/codegen.c, par_begin); splits
 * [0, count) into up to gr_threads() parts, or one when count * cost (elements) is small. */
void gr_parallel_for(gr_task_fn fn, void *ctx, int64_t count, int64_t cost);
void gr_set_threads(int n);
int gr_threads(void);

/* gemm.c — C[M, N] = op(A) op(B) + beta C, row-major f32 (cblas_sgemm with alpha 1): graft's own
 * kernels on the pool where the CPU has AVX-512, or AVX2 and FMA (the same bits on both), else
 * OpenBLAS. gr_gemm_kind names the one in use; gr_gemm_use("blas" | "avx2" | "avx512") switches to
 * one (the tests and bench/gemm.c), false if this CPU cannot run it. */
void gr_sgemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
const char *gr_gemm_kind(void);
bool gr_gemm_use(const char *kind);
/* The same with B packed by the caller, block by block as the GEMM needs it: pack(ctx, k0, kc, n0, nc,
 * bp) writes B[k0 .. k0+kc, n0 .. n0+nc] into bp as GR_PANEL-column micro-panels (ir/ir.h), element
 * (k, j) at bp[(j - n0) / 32 * 32 kc + (k - k0) * 32 + j % 32], zeros in a last panel's columns past
 * N; n0 is always a multiple of 32. It is called from the pool's threads, for disjoint blocks. A
 * convolution packs its B straight from NCHW this way (compiler/codegen.c). f64, and f32 through
 * OpenBLAS, unpack B into an ordinary matrix with the same function. */
typedef void (*gr_pack_fn)(void *ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, void *bp);
void gr_sgemm_cb(int ta, int M, int N, int K, const float *A, int lda, gr_pack_fn pack, void *ctx, float beta, float *C, int ldc);
void gr_dgemm_cb(int ta, int M, int N, int K, const double *A, int lda, gr_pack_fn pack, void *ctx, double beta, double *C, int ldc);

#endif
