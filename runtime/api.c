/* api.c — graft's C API (include/graft.h) over the runtime: a graft_model is a compiled run (its
 * phases' models), a session holding parameters and optimizer state, and where training is. Training
 * takes exactly the steps `graft train` takes (train.c): the same batch order from the same seeded
 * generators, the same run-time scalars (gr_step_scalars), the same phase changes
 * (gr_session_next_phase), so that the same data gives the same weights. It does not use the feature
 * cache, checkpoints or domain adaptation, which need the plan's data files. */
#include "runtime/api.h"
#include "runtime/artifact.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct graft_model {
  gr_diag diag;
  graft_diag_fn fn;
  void *user;
  char last_error[1024];
  gr_run run;
  void *owner;
  void (*free_owner)(void *);
  gr_session *s;
  int phase;
  int64_t epoch, phase_epoch, step, steps_per_epoch, epochs; /* epochs: all phases' */
  int64_t phase_start[GR_MAX_PHASES];
  gr_rng order, drop;
  int64_t *perm, perm_n; /* graft_train_epoch's batch order, shuffled again every epoch */
  int64_t *rows;         /* graft_train_step's: 0 .. max_batch - 1 */
  bool sized;            /* steps_per_epoch known (graft_train_epoch or graft_set_train_size) */
  float scal[GR_SCALAR_TOTAL];
};

const char *graft_status_string(graft_status s) {
  static const char *const names[] = {"ok", "invalid argument", "invalid input", "input/output error", "out of memory",
                                      "loss not finite", "not supported", "CPU lacks the features the code was compiled for"};
  return (unsigned)s < sizeof names / sizeof *names ? names[s] : "unknown status";
}

/* Every diagnostic: remembered when an error, then to the user's callback or printed as graft does. */
static void sink(void *user, gr_diag_kind kind, gr_loc loc, const char *msg) {
  graft_model *m = user;
  if (kind == GR_DIAG_ERROR) gr_diag_format(m->last_error, sizeof m->last_error, kind, loc, msg);
  if (m->fn) {
    m->fn(m->user, kind == GR_DIAG_ERROR ? GRAFT_DIAG_ERROR : kind == GR_DIAG_WARNING ? GRAFT_DIAG_WARNING : GRAFT_DIAG_NOTE, loc.file,
          loc.line, loc.col, msg);
    return;
  }
  char line[4096];
  gr_diag_format(line, sizeof line, kind, loc, msg);
  fprintf(stderr, "%s\n", line);
}

graft_model *gr_api_new(const graft_options *o) {
  graft_model *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  gr_diag_init(&m->diag);
  m->diag.sink = sink;
  m->diag.user = m;
  if (o) {
    m->fn = o->diag;
    m->user = o->diag_user;
    if (o->threads > 0) gr_set_threads(o->threads);
  }
  return m;
}

gr_diag *gr_api_diag(graft_model *m) { return &m->diag; }
gr_session *gr_api_session(graft_model *m) { return m->s; }
graft_status gr_api_opened(graft_model *m, graft_status st, graft_model **out) {
  if (st) {
    graft_close(m);
    *out = NULL;
  }
  return st;
}

graft_status gr_api_start(graft_model *m, const gr_run *run, void *owner, void (*free_owner)(void *), const uint8_t *init,
                          size_t init_size) {
  m->run = *run;
  m->owner = owner;
  m->free_owner = free_owner;
  for (int k = 0; k < run->n_phases; k++) m->epochs += run->phases[k].epochs;
  const gr_rt_model *rm = run->phases[0].m;
  if (rm->domain) {
    gr_error(&m->diag, (gr_loc){0}, "the C API does not train domain-adaptation plans yet (they need the plan's target data): use graft train");
    return GRAFT_ERR_UNSUPPORTED;
  }
  if (init && gr_params_end(rm) > init_size) {
    gr_error(&m->diag, (gr_loc){0}, "the compiled plan's initial weights are %zu bytes, its parameters %zu", init_size, gr_params_end(rm));
    return GRAFT_ERR_INPUT;
  }
  /* from the compiled plan's initial weights, or initialised from the seed (the plan's init file is loaded after) */
  if (!(m->s = init ? gr_session_new_from(rm, init, &m->diag) : gr_session_new(rm, run->seed, &m->diag))) return GRAFT_ERR_MEMORY;
  gr_run_rngs(run->seed, &m->order, &m->drop);
  m->steps_per_epoch = 1;
  int64_t B = 0;
  for (int k = 0; k < run->n_phases; k++) B = run->phases[k].m->max_batch > B ? run->phases[k].m->max_batch : B;
  if (!(m->rows = malloc(sizeof(int64_t) * (size_t)B))) return GRAFT_ERR_MEMORY;
  for (int64_t i = 0; i < B; i++) m->rows[i] = i;
  return GRAFT_OK;
}

void graft_close(graft_model *m) {
  if (!m) return;
  gr_session_free(m->s);
  if (m->free_owner) m->free_owner(m->owner);
  free(m->perm);
  free(m->rows);
  gr_diag_free(&m->diag);
  free(m);
}

const char *graft_last_error(const graft_model *m) { return m ? m->last_error : "no model"; }

static const gr_rt_model *model_of(const graft_model *m) { return m->run.phases[m->phase].m; }
int64_t graft_input_numel(const graft_model *m) { return m ? model_of(m)->sample_numel : 0; }
int64_t graft_classes(const graft_model *m) { return m ? model_of(m)->n_classes : 0; }
int64_t graft_max_batch(const graft_model *m) { return m ? model_of(m)->max_batch : 0; }
int64_t graft_target_numel(const graft_model *m) { return m ? model_of(m)->target_numel : 0; }
int64_t graft_epochs(const graft_model *m) { return m ? m->epochs : 0; }
int64_t graft_epoch(const graft_model *m) { return m ? m->epoch : 0; }
int64_t graft_step(const graft_model *m) { return m ? m->step : 0; }
int graft_phases(const graft_model *m) { return m ? m->run.n_phases : 0; }
int graft_phase(const graft_model *m) { return m ? m->phase : 0; }

/* The learning rate of the next step. */
static double next_lr(const graft_model *m) {
  return gr_run_lr(&m->run.schedule, m->run.lr, m->step, m->epoch, m->steps_per_epoch, m->epochs, m->run.phases[m->phase].lr_mult);
}
double graft_learning_rate(const graft_model *m) { return m ? next_lr(m) : NAN; }

static graft_status null_arg(graft_model *m, const char *fn, const char *what) {
  gr_error(&m->diag, (gr_loc){0}, "%s: %s is NULL", fn, what);
  return GRAFT_ERR_ARGUMENT;
}

/* The common checks of a call on n samples: pointers, n in range, and the values a kernel would
 * index with (class labels, token ids) inside the model's bounds. */
static graft_status check_batch(graft_model *m, const char *fn, const void *x, const void *y, int64_t n, int64_t max_n) {
  const gr_rt_model *rm = model_of(m);
  if (!x || (!y && max_n >= 0)) return null_arg(m, fn, x ? "the targets pointer" : "the samples pointer");
  if (n < 1 || (max_n > 0 && n > max_n)) {
    gr_error(&m->diag, (gr_loc){0}, "%s: %lld samples; it takes 1 to %lld", fn, (long long)n, (long long)(max_n > 0 ? max_n : INT64_MAX));
    return GRAFT_ERR_ARGUMENT;
  }
  if (rm->in_dtype == GR_I32)
    for (int64_t i = 0; i < n * rm->sample_numel; i++) {
      int32_t t = ((const int32_t *)x)[i];
      if (t < 0 || t >= rm->in_limit) {
        gr_error(&m->diag, (gr_loc){0}, "%s: token id %d of sample %lld is outside the model's vocabulary (0 to %lld)", fn, t,
                 (long long)(i / rm->sample_numel), (long long)rm->in_limit - 1);
        return GRAFT_ERR_INPUT;
      }
    }
  if (y && !rm->target_numel)
    for (int64_t i = 0; i < n; i++) {
      int32_t c = ((const int32_t *)y)[i];
      if (c < 0 || c >= rm->n_classes) {
        gr_error(&m->diag, (gr_loc){0}, "%s: label %d of sample %lld is not a class of the model (0 to %lld)", fn, c, (long long)i,
                 (long long)rm->n_classes - 1);
        return GRAFT_ERR_INPUT;
      }
    }
  return GRAFT_OK;
}

/* The data as a runtime data set (rows in memory, not copied). */
static gr_dataset as_dataset(const gr_rt_model *rm, const void *x, const void *y, int64_t n) {
  return (gr_dataset){.n = n, .sample_numel = rm->sample_numel, .target_numel = rm->target_numel ? rm->target_numel : 1, .x = (void *)x,
                      .y = (void *)y};
}

/* One step on rows idx[0..n) of ds. */
static graft_status step(graft_model *m, const gr_dataset *ds, const int64_t *idx, int64_t n, float *loss) {
  const gr_rt_model *rm = model_of(m);
  const gr_rt_program *p = &rm->train;
  uint8_t *arena = gr_session_arena(m->s);
  gr_gather(p, arena, ds, idx, n, false, 0, &m->diag); /* rows in memory: cannot fail */
  gr_step_scalars(m->scal, rm, next_lr(m), m->step, m->phase, m->phase_start, &m->drop, 1.0);
  if (p->dloss_off >= 0) *(float *)(arena + p->dloss_off) = 1.0f;
  p->fn(gr_session_slab(m->s), arena, n, m->scal);
  m->step++;
  float l = *(float *)(arena + p->loss_off);
  if (loss) *loss = l;
  if (!isfinite(l)) {
    gr_error(&m->diag, (gr_loc){0}, "training step %lld made the loss %s; lower the learning rate", (long long)m->step,
             isnan(l) ? "NaN" : "infinite");
    return GRAFT_ERR_NUMERIC;
  }
  return GRAFT_OK;
}

graft_status graft_set_train_size(graft_model *m, int64_t n) {
  if (!m) return GRAFT_ERR_ARGUMENT;
  if (n < 1) {
    gr_error(&m->diag, (gr_loc){0}, "graft_set_train_size: %lld samples; it takes at least 1", (long long)n);
    return GRAFT_ERR_ARGUMENT;
  }
  int64_t B = model_of(m)->max_batch;
  m->steps_per_epoch = (n + B - 1) / B;
  m->sized = true;
  return GRAFT_OK;
}

graft_status graft_train_step(graft_model *m, const void *x, const void *y, int64_t n, float *loss) {
  if (!m) return GRAFT_ERR_ARGUMENT;
  graft_status st = check_batch(m, "graft_train_step", x, y, n, model_of(m)->max_batch);
  if (st) return st;
  if (m->run.schedule.per_step && !m->sized) {
    gr_error(&m->diag, (gr_loc){0}, "graft_train_step: the plan's learning-rate schedule advances every step, so it needs the steps in "
                                    "an epoch: call graft_set_train_size first");
    return GRAFT_ERR_ARGUMENT;
  }
  gr_dataset ds = as_dataset(model_of(m), x, y, n);
  return step(m, &ds, m->rows, n, loss);
}

graft_status graft_end_epoch(graft_model *m) {
  if (!m) return GRAFT_ERR_ARGUMENT;
  if (m->phase_epoch + 1 >= m->run.phases[m->phase].epochs && m->phase + 1 < m->run.n_phases) {
    /* the next phase: its own trainable set, the same parameters; on failure nothing moves */
    gr_session *s = gr_session_next_phase(m->s, m->run.phases[m->phase + 1].m, m->run.seed, &m->diag);
    if (!s) return GRAFT_ERR_MEMORY;
    m->s = s;
    m->phase++;
    m->phase_epoch = -1;
    m->phase_start[m->phase] = m->step;
  }
  m->epoch++;
  m->phase_epoch++;
  return GRAFT_OK;
}

graft_status graft_train_epoch(graft_model *m, const void *x, const void *y, int64_t n, float *loss) {
  if (!m) return GRAFT_ERR_ARGUMENT;
  graft_status st = check_batch(m, "graft_train_epoch", x, y, n, 0);
  if (st) return st;
  if (m->perm && m->perm_n != n) {
    gr_error(&m->diag, (gr_loc){0}, "graft_train_epoch: %lld samples, but earlier epochs had %lld; the training set must keep its size",
             (long long)n, (long long)m->perm_n);
    return GRAFT_ERR_ARGUMENT;
  }
  if (!m->perm) {
    if (!(m->perm = malloc(sizeof(int64_t) * (size_t)n))) return GRAFT_ERR_MEMORY;
    for (int64_t i = 0; i < n; i++) m->perm[i] = i;
    m->perm_n = n;
  }
  graft_set_train_size(m, n);
  if (m->run.shuffle) gr_rng_shuffle(&m->order, m->perm, n);
  int64_t B = model_of(m)->max_batch;
  gr_dataset ds = as_dataset(model_of(m), x, y, n);
  double sum = 0;
  for (int64_t b = 0; b < n && !st; b += B) {
    int64_t k = n - b < B ? n - b : B;
    float l = 0;
    st = step(m, &ds, m->perm + b, k, &l);
    sum += (double)l * (double)k;
  }
  if (loss) *loss = (float)(sum / (double)n);
  return st ? st : graft_end_epoch(m);
}

graft_status graft_evaluate(graft_model *m, const void *x, const void *y, int64_t n, double *loss, double *accuracy) {
  if (!m) return GRAFT_ERR_ARGUMENT;
  graft_status st = check_batch(m, "graft_evaluate", x, y, n, 0);
  if (st) return st;
  gr_dataset ds = as_dataset(model_of(m), x, y, n);
  double l, a;
  gr_session_evaluate(m->s, &ds, &l, &a, NULL, &m->diag); /* rows in memory: nothing to decode, so it cannot fail */
  if (loss) *loss = l;
  if (accuracy) *accuracy = a;
  return GRAFT_OK;
}

graft_status graft_predict(graft_model *m, const void *x, int64_t n, float *out) {
  if (!m) return GRAFT_ERR_ARGUMENT;
  graft_status st = check_batch(m, "graft_predict", x, NULL, n, -1);
  if (st) return st;
  if (!out) return null_arg(m, "graft_predict", "the output pointer");
  const gr_rt_model *rm = model_of(m);
  void *zeros = calloc((size_t)n, 4 * (size_t)(rm->target_numel ? rm->target_numel : 1)); /* targets: none, but the program reads some */
  if (!zeros) return GRAFT_ERR_MEMORY;
  gr_dataset ds = as_dataset(rm, x, zeros, n);
  double l, a;
  gr_session_evaluate(m->s, &ds, &l, &a, out, &m->diag);
  free(zeros);
  return GRAFT_OK;
}

graft_status graft_save(graft_model *m, const char *path) {
  if (!m) return GRAFT_ERR_ARGUMENT;
  if (!path) return null_arg(m, "graft_save", "the path");
  return gr_session_save(m->s, path, &m->diag) ? GRAFT_OK : GRAFT_ERR_IO;
}

graft_status graft_load(graft_model *m, const char *path) {
  if (!m) return GRAFT_ERR_ARGUMENT;
  if (!path) return null_arg(m, "graft_load", "the path");
  return gr_session_load(m->s, path, NULL, NULL, &m->diag) ? GRAFT_OK : GRAFT_ERR_INPUT;
}

/* ---- plans compiled ahead of time ---- */

/* Whether this CPU has the x86 feature LLVM calls f (or is of the x86-64 level f names); features the
 * check does not know (lzcnt, movbe, f16c, ...) count as present. */
static bool x86_has(const char *f) {
#if defined(__x86_64__) && defined(__GNUC__)
#define F(llvm, gcc) \
  if (!strcmp(f, llvm)) return __builtin_cpu_supports(gcc);
  F("ssse3", "ssse3") F("sse4.1", "sse4.1") F("sse4.2", "sse4.2") F("popcnt", "popcnt") F("aes", "aes") F("pclmul", "pclmul")
  F("avx", "avx") F("avx2", "avx2") F("fma", "fma") F("bmi", "bmi") F("bmi2", "bmi2") F("gfni", "gfni") F("vpclmulqdq", "vpclmulqdq")
  F("avx512f", "avx512f") F("avx512bw", "avx512bw") F("avx512dq", "avx512dq") F("avx512vl", "avx512vl") F("avx512cd", "avx512cd")
  F("avx512vnni", "avx512vnni") F("avx512bf16", "avx512bf16") F("avx512vbmi", "avx512vbmi") F("avx512vbmi2", "avx512vbmi2")
  F("avx512ifma", "avx512ifma") F("avx512vpopcntdq", "avx512vpopcntdq") F("avx512bitalg", "avx512bitalg")
  /* the x86-64 micro-architecture levels, as --target-cpu names them */
  F("x86-64-v2", "x86-64-v2") F("x86-64-v3", "x86-64-v3") F("x86-64-v4", "x86-64-v4")
#undef F
#endif
  return true;
}

/* The first feature the artifact's feature string ("+avx2,-sse4a,+fma,...") enables that this CPU
 * lacks, copied to missing; false if none. */
static bool cpu_lacks(const char *features, char *missing, size_t size) {
  for (const char *p = features; p && *p;) {
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (*p == '+' && n > 1 && n < size) {
      memcpy(missing, p + 1, n - 1);
      missing[n - 1] = 0;
      if (!x86_has(missing)) return true;
    }
    p += n + (end != NULL);
  }
  return false;
}

static void free_arena(void *a) {
  gr_arena_free(a);
  free(a);
}

graft_status graft_open_artifact(const graft_artifact *a, const graft_options *o, graft_model **out) {
  if (!out) return GRAFT_ERR_ARGUMENT;
  graft_model *m = *out = gr_api_new(o);
  if (!m) return GRAFT_ERR_MEMORY;
  graft_status st = GRAFT_OK;
  if (!a || a->magic != GR_ARTIFACT_MAGIC) {
    gr_error(&m->diag, (gr_loc){0}, "graft_open_artifact: %s", a ? "not a plan compiled by graft compile" : "a NULL artifact");
    st = GRAFT_ERR_ARGUMENT;
  } else if (a->abi != GR_ARTIFACT_ABI) {
    gr_error(&m->diag, (gr_loc){0}, "the compiled plan '%s' is for graft's artifact ABI %u, this runtime has %u: compile it again with this graft",
             a->name ? a->name : "?", a->abi, (unsigned)GR_ARTIFACT_ABI);
    st = GRAFT_ERR_INPUT;
  }
  gr_arena *arena = st ? NULL : malloc(sizeof *arena);
  if (!st && !arena) st = GRAFT_ERR_MEMORY;
  gr_run run;
  gr_artifact_info info;
  char missing[64];
  if (!st) {
    gr_arena_init(arena);
    if (!gr_artifact_decode(a->desc, a->desc_size, a->steps, a->n_steps, arena, &run, &info, &m->diag)) {
      st = GRAFT_ERR_INPUT;
    } else if (cpu_lacks(info.features, missing, sizeof missing) || (!x86_has(info.cpu) && snprintf(missing, sizeof missing, "%s", info.cpu))) {
      gr_error(&m->diag, (gr_loc){0}, "the compiled plan '%s' was compiled for CPU %s, and this CPU lacks its feature '%s': compile it again "
               "with --target-cpu (e.g. x86-64-v3 for AVX2 machines)", info.name, info.cpu, missing);
      st = GRAFT_ERR_CPU;
    }
    if (st) free_arena(arena);
  }
  if (!st) st = gr_api_start(m, &run, arena, free_arena, a->init, a->init_size);
  return gr_api_opened(m, st, out);
}
