/* train.c — the training loop: a session owns the parameter slab and one arena per program, all
 * allocated before the first step (zeroed mappings whose pages become resident when first used); a
 * step only gathers the batch into the arena and calls the compiled function. Evaluation runs the
 * eval program over the test set after each epoch (or every eval_every epochs). A gradually unfrozen
 * plan runs its phases in order, switching sessions in between; a model with a feature cache trains
 * from its cached prefix output. Randomness (initialisation, shuffling) comes from the plan's seed. */
#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct gr_session {
  const gr_rt_model *m;
  uint8_t *slab, *train_arena, *eval_arena;
  uint8_t *features_arena, *cached_arena; /* the feature cache's programs, allocated when it is used */
};

/* Zeroed, page-aligned memory straight from the kernel: its pages become resident only when first
 * written, so an arena a run never uses (the evaluation arena without test data, the training arena
 * when the feature cache replaces it) costs address space, not memory. Freed with free_zeroed. */
static uint8_t *alloc_zeroed(int64_t bytes, const char *what, gr_diag *d) {
  size_t n = (size_t)(bytes > 0 ? bytes : 1) + 64; /* 64 bytes in front hold the size */
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    gr_error(d, (gr_loc){0}, "cannot allocate %.1f MiB for the %s", (double)n / (1 << 20), what);
    return NULL;
  }
#ifdef MADV_HUGEPAGE
  /* transparent huge pages where the kernel offers them on request: a 2 MiB page is faulted in once
   * instead of 512 small ones, and the TLB covers the arena (memory is committed as it is touched) */
  madvise(p, n, MADV_HUGEPAGE);
#endif
  *(size_t *)p = n;
  return (uint8_t *)p + 64;
}

static void free_zeroed(uint8_t *p) {
  if (!p) return;
  uint8_t *base = p - 64;
  munmap(base, *(size_t *)base);
}

/* A session whose slab and arenas are allocated (zeroed), its parameters not yet initialised. */
static gr_session *session_alloc(const gr_rt_model *m, gr_diag *d) {
  GR_CHECK(m->dtype == GR_F32, "the runtime trains f32 models");
  gr_session *s = calloc(1, sizeof *s);
  GR_CHECK(s != NULL, "out of memory");
  s->m = m;
  if (!(s->slab = alloc_zeroed(m->slab_bytes, "parameters and optimizer state", d)) ||
      !(s->train_arena = alloc_zeroed(m->train.arena_bytes, "training arena", d)) ||
      !(s->eval_arena = alloc_zeroed(m->eval.arena_bytes, "evaluation arena", d))) {
    gr_session_free(s);
    return NULL;
  }
  return s;
}

size_t gr_params_end(const gr_rt_model *m) {
  size_t end = 0;
  for (int i = 0; i < m->n_params; i++) {
    size_t e = (size_t)m->params[i].offset + 4 * (size_t)m->params[i].numel;
    end = e > end ? e : end;
  }
  return end;
}

gr_session *gr_session_new_from(const gr_rt_model *m, const uint8_t *image, gr_diag *d) {
  gr_session *s = session_alloc(m, d);
  for (int i = 0; s && i < m->n_params; i++)
    memcpy(s->slab + m->params[i].offset, image + m->params[i].offset, 4 * (size_t)m->params[i].numel);
  return s;
}

gr_session *gr_session_new(const gr_rt_model *m, uint64_t seed, gr_diag *d) {
  gr_session *s = session_alloc(m, d);
  if (!s) return NULL;
  gr_rng r;
  gr_rng_seed(&r, seed);
  for (int i = 0; i < m->n_params; i++) {
    const gr_rt_param *p = &m->params[i];
    float *w = (float *)(s->slab + p->offset);
    if (p->init_std > 0)
      for (int64_t k = 0; k < p->numel; k++) w[k] = (float)(gr_rng_normal(&r) * p->init_std);
    else if (p->init_bound == 0)
      for (int64_t k = 0; k < p->numel; k++) w[k] = p->init_value;
    else
      for (int64_t k = 0; k < p->numel; k++) w[k] = (float)((2 * gr_rng_uniform(&r) - 1) * p->init_bound);
    if (p->zero_row >= 0) {
      int64_t row = p->numel / p->shape.dim[0];
      memset(w + p->zero_row * row, 0, sizeof(float) * (size_t)row);
    }
  }
  return s;
}

const gr_rt_model *gr_session_model(const gr_session *s) { return s->m; }
uint8_t *gr_session_slab(gr_session *s) { return s->slab; }
uint8_t *gr_session_arena(gr_session *s) { return s->train_arena; }
float *gr_session_param(gr_session *s, int i) { return (float *)(s->slab + s->m->params[i].offset); }
float *gr_session_state(gr_session *s, int i) { return (float *)(s->slab + s->m->states[i].offset); }

void gr_session_free(gr_session *s) {
  if (!s) return;
  free_zeroed(s->slab);
  free_zeroed(s->train_arena);
  free_zeroed(s->features_arena);
  free_zeroed(s->cached_arena);
  free_zeroed(s->eval_arena);
  free(s);
}

bool gr_gather(const gr_rt_program *p, uint8_t *arena, const gr_dataset *ds, const int64_t *idx, int64_t n, bool augment,
                   uint64_t seed, gr_diag *d) {
  size_t yrow = 4 * (size_t)ds->target_numel;
  for (int64_t i = 0; i < n; i++) memcpy(arena + p->y_off + (size_t)i * yrow, (const uint8_t *)ds->y + (size_t)idx[i] * yrow, yrow);
  return gr_dataset_samples(ds, idx, n, augment, seed, arena + p->x_off, d);
}

/* Domain adaptation's batch: after the n source rows gr_gather() put in, nt target rows idx[0..nt);
 * the class labels of the rows the label loss does not see set to -1 (ignored), the domain labels
 * 0 (source) and 1 (target). */
static bool gather_target(const gr_rt_program *p, uint8_t *arena, const gr_dataset *tgt, const int64_t *idx, int64_t n, int64_t nt,
                          int label_on, uint64_t seed, gr_diag *d) {
  int32_t *y = (int32_t *)(arena + p->y_off), *dy = (int32_t *)(arena + p->dom_y_off);
  for (int64_t i = 0; i < nt; i++) y[n + i] = label_on == 0 ? -1 : ((const int32_t *)tgt->y)[idx[i]];
  for (int64_t i = 0; label_on == 1 && i < n; i++) y[i] = -1;
  for (int64_t i = 0; i < n + nt; i++) dy[i] = i >= n;
  return gr_dataset_samples(tgt, idx, nt, false, seed, arena + p->x_off + 4 * (size_t)(n * tgt->sample_numel), d);
}

/* The target rows of a step: the target set is walked in passes, each a fresh shuffle, regardless of
 * the source's epochs; which rows a step takes depends only on the seed and the step, so a resumed
 * run takes the same ones. */
typedef struct target_stream {
  const gr_dataset *ds;
  int64_t rows, pass, *perm; /* perm: the shuffle of pass `pass` */
  uint64_t seed;
  bool shuffle;              /* false: every pass in file order (data.shuffle: false) */
} target_stream;

static void target_rows(target_stream *t, int64_t step, int64_t *idx) {
  int64_t n = t->ds->n;
  for (int64_t r = 0; r < t->rows; r++) {
    int64_t pos = step * t->rows + r, pass = pos / n;
    if (pass != t->pass) {
      gr_rng g;
      gr_rng_seed(&g, t->seed ^ 0x7A26E7DULL ^ ((uint64_t)pass * 0x9E3779B97F4A7C15ULL));
      for (int64_t i = 0; i < n; i++) t->perm[i] = i;
      if (t->shuffle) gr_rng_shuffle(&g, t->perm, n);
      t->pass = pass;
    }
    idx[r] = t->perm[pos % n];
  }
}

int64_t gr_source_rows(int64_t B, double fraction) {
  int64_t n = llround((double)B * fraction);
  return n < 1 ? 1 : n > B - 1 ? B - 1 : n;
}

double gr_dann_lambda(const gr_train_cfg *cfg, double p) {
  return cfg->lambda_constant ? cfg->lambda_max : cfg->lambda_max * (2 / (1 + exp(-cfg->lambda_gamma * p)) - 1);
}

/* Domain accuracy: how many rows of out[n, 2] the domain head assigns to `domain`. */
static int64_t count_domain(const float *out, int64_t n, int domain) {
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) k += (out[2 * i + 1] > out[2 * i]) == domain;
  return k;
}

/* The indices b .. b+n-1, for walking a data set in order. */
static void iota(int64_t *idx, int64_t b, int64_t n) {
  for (int64_t i = 0; i < n; i++) idx[i] = b + i;
}

/* What accuracy counts in a batch of n: rows whose arg-max of out[n, classes] equals the label, or
 * elements whose logit's sign agrees with the target (binary); *total gets the count it is out of. */
static int64_t count_correct(const gr_rt_model *m, const float *out, const void *y, int64_t n, int64_t *total) {
  int64_t correct = 0, C = m->n_classes;
  *total = m->accuracy == GR_ACC_BINARY ? n * C : n;
  if (m->accuracy == GR_ACC_BINARY) {
    const float *t = y;
    for (int64_t i = 0; i < n * C; i++) correct += (out[i] > 0) == (t[i] >= 0.5f);
  } else if (m->accuracy == GR_ACC_ARGMAX) {
    const int32_t *labels = y;
    for (int64_t i = 0; i < n; i++) {
      if (labels[i] < 0) { /* a row without a label (domain adaptation's target rows) */
        --*total;
        continue;
      }
      const float *row = out + i * C;
      int64_t best = 0;
      for (int64_t c = 1; c < C; c++)
        if (row[c] > row[best]) best = c;
      correct += best == labels[i];
    }
  }
  return correct;
}

/* correct / total, or NaN when the model has no accuracy (a regression) or nothing was counted */
static double ratio(const gr_rt_model *m, int64_t correct, int64_t total) {
  return m->accuracy == GR_ACC_NONE || total == 0 ? NAN : (double)correct / (double)total;
}

static bool evaluate(gr_session *s, const gr_dataset *ds, int domain, double *loss, double *accuracy, int64_t *dom_correct, float *outputs,
                     gr_diag *d);

bool gr_session_evaluate(gr_session *s, const gr_dataset *ds, double *loss, double *accuracy, float *outputs, gr_diag *d) {
  return evaluate(s, ds, 0, loss, accuracy, NULL, outputs, d);
}

bool gr_session_evaluate_domain(gr_session *s, const gr_dataset *ds, int domain, double *loss, double *accuracy, int64_t *dom_correct,
                                gr_diag *d) {
  *dom_correct = 0;
  return evaluate(s, ds, domain, loss, accuracy, dom_correct, NULL, d);
}

static bool evaluate(gr_session *s, const gr_dataset *ds, int domain, double *loss, double *accuracy, int64_t *dom_correct, float *outputs,
                     gr_diag *d) {
  const gr_rt_model *m = s->m;
  const gr_rt_program *p = &m->eval;
  int64_t B = m->max_batch, *idx = malloc(sizeof(int64_t) * 2 * (size_t)B), *next = idx + B;
  GR_CHECK(idx != NULL, "out of memory");
  double total = 0;
  int64_t correct = 0, counted = 0, k;
  float scal[GR_SCALAR_TOTAL] = {[GR_SCALAR_LAMBDA] = 1};
  bool ok = true;
  for (int64_t b = 0; b < ds->n && ok; b += B) {
    int64_t n = ds->n - b < B ? ds->n - b : B, nb = b + B, nn = ds->n - nb < B ? ds->n - nb : B;
    iota(idx, b, n);
    if (!(ok = gr_gather(p, s->eval_arena, ds, idx, n, false, 0, d))) break;
    iota(next, nb, nn); /* decoded while this batch runs */
    gr_dataset_prefetch(ds, next, nn, false, 0);
    p->fn(s->slab, s->eval_arena, n, scal);
    total += (double)*(float *)(s->eval_arena + p->loss_off) * (double)n;
    correct += count_correct(m, (float *)(s->eval_arena + p->out_off), s->eval_arena + p->y_off, n, &k);
    counted += k;
    if (dom_correct && p->dom_out_off >= 0) *dom_correct += count_domain((float *)(s->eval_arena + p->dom_out_off), n, domain);
    if (outputs) memcpy(outputs + b * m->n_classes, s->eval_arena + p->out_off, sizeof(float) * (size_t)(n * m->n_classes));
  }
  free(idx);
  *loss = ds->n ? total / (double)ds->n : NAN;
  *accuracy = ratio(m, correct, counted);
  return ok;
}

/* The feature cache's values: malloc'd memory within the budget, or else a shared mapping of an
 * unlinked file (the kernel writes its pages out and reads them back as memory demands; the file
 * vanishes when the run ends, however it ends). */
typedef struct feature_cache {
  gr_dataset ds; /* x: the values; y: the training set's labels, not owned */
  size_t mapped; /* > 0: x is a file mapping of this many bytes */
} feature_cache;

static void cache_free(feature_cache *c) {
  if (c->mapped)
    munmap(c->ds.x, c->mapped);
  else
    free(c->ds.x);
  memset(c, 0, sizeof *c);
}

/* A zeroed file mapping of `bytes` in dir (NULL: $TMPDIR or /tmp), its blocks reserved up front so
 * that a full disk shows now and not as a SIGBUS mid-epoch; NULL with the reason in why. */
static void *spill_file(const char *dir, size_t bytes, char *why, size_t why_size) {
  char path[4096];
  snprintf(path, sizeof path, "%s/graft-features-XXXXXX", dir);
  int fd = mkstemp(path);
  if (fd < 0) {
    snprintf(why, why_size, "cannot create a file there: %s", strerror(errno));
    return NULL;
  }
  unlink(path);
  struct statvfs st;
  double room = fstatvfs(fd, &st) == 0 ? (double)st.f_bavail * (double)st.f_frsize : INFINITY;
  int e = room < (double)bytes + (64 << 20) ? ENOSPC : posix_fallocate(fd, 0, (off_t)bytes);
  void *p = e ? MAP_FAILED : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    if (e == ENOSPC && isfinite(room))
      snprintf(why, why_size, "%.0f MiB free there, %.0f MiB needed", room / (1 << 20), (double)bytes / (1 << 20) + 64);
    else
      snprintf(why, why_size, "%s", strerror(e ? e : errno));
  }
  close(fd);
  return p == MAP_FAILED ? NULL : p;
}

/* Room for the cache: memory within the budget, else (cache_spill) a file; false, saying why on the
 * log, when neither. *where describes the place for the log. */
static bool cache_alloc(const gr_rt_model *m, feature_cache *c, size_t bytes, int64_t n, FILE *log, char *where, size_t wsize) {
  double mib = (double)bytes / (1 << 20);
  if (bytes <= (size_t)m->cache_budget) {
    snprintf(where, wsize, "in memory");
    c->ds.x = malloc(bytes + 1);
    if (!c->ds.x) fprintf(log, "feature cache: out of memory for %.0f MiB; training without it\n", mib);
    return c->ds.x != NULL;
  }
  fprintf(log, "feature cache: %.1f MiB for %lld samples is over its memory budget of %lld MiB (feature_cache_mb)", mib, (long long)n,
          (long long)(m->cache_budget >> 20));
  if (!m->cache_spill) {
    fprintf(log, "; training without it (feature_cache: memory)\n");
    return false;
  }
  const char *tmp = getenv("TMPDIR"), *dir = m->cache_dir ? m->cache_dir : tmp && *tmp ? tmp : "/tmp";
  char why[256];
  c->ds.x = spill_file(dir, bytes, why, sizeof why);
  if (!c->ds.x) {
    fprintf(log, "; it cannot go to a file in %s either (%s; feature_cache_dir): training without it\n", dir, why);
    return false;
  }
  c->mapped = bytes;
  snprintf(where, wsize, "in a file in %s", dir);
  fprintf(log, "; it goes to a file in %s\n", dir);
  return true;
}

/* The feature cache: the frozen prefix's output for every training sample (cache->ds.x), computed
 * once with the features program; the labels are the data set's. Returns 1 when built; 0 (training
 * goes on without it) when the model has no cache, or it fits neither the budget nor a file, or the
 * training images are augmented, saying why on the log; -1 after reporting an image that cannot be
 * decoded. */
static int build_cache(gr_session *s, const gr_dataset *train, bool augment, feature_cache *cache, FILE *log, gr_diag *d) {
  const gr_rt_model *m = s->m;
  if (m->feat_numel <= 0) return 0;
  if (train->img && augment) {
    fprintf(log, "feature cache: off, as the training images are augmented (random_crop, flip): the frozen prefix's output differs every epoch\n");
    return 0;
  }
  double t0 = gr_now();
  size_t row = 4 * (size_t)m->feat_numel, bytes = row * (size_t)train->n;
  char where[4200];
  cache->ds = (gr_dataset){.n = train->n, .sample_numel = m->feat_numel, .target_numel = train->target_numel, .y = train->y};
  if (!cache_alloc(m, cache, bytes, train->n, log, where, sizeof where)) return 0;
  if ((!s->features_arena && !(s->features_arena = alloc_zeroed(m->features.arena_bytes, "feature cache arena", d))) ||
      (!s->cached_arena && !(s->cached_arena = alloc_zeroed(m->train_cached.arena_bytes, "cached training arena", d)))) {
    cache_free(cache);
    fprintf(log, "feature cache: out of memory; training without it\n");
    return 0;
  }
  const gr_rt_program *p = &m->features;
  float scal[GR_SCALAR_TOTAL] = {0};
  int64_t B = m->max_batch, *idx = malloc(sizeof(int64_t) * 2 * (size_t)B), *next = idx + B;
  GR_CHECK(idx != NULL, "out of memory");
  for (int64_t b = 0; b < train->n; b += B) {
    int64_t n = train->n - b < B ? train->n - b : B, nb = b + B, nn = train->n - nb < B ? train->n - nb : B;
    if (!train->img) { /* samples b .. b+n-1 are contiguous: one copy */
      size_t xrow = 4 * (size_t)train->sample_numel;
      memcpy(s->features_arena + p->x_off, (const uint8_t *)train->x + (size_t)b * xrow, xrow * (size_t)n);
    } else {
      iota(idx, b, n);
      if (!gr_dataset_samples(train, idx, n, false, 0, s->features_arena + p->x_off, d)) {
        free(idx);
        cache_free(cache);
        return -1;
      }
      iota(next, nb, nn);
      gr_dataset_prefetch(train, next, nn, false, 0);
    }
    p->fn(s->slab, s->features_arena, n, scal);
    memcpy((uint8_t *)cache->ds.x + (size_t)b * row, s->features_arena + p->out_off, row * (size_t)n);
  }
  free(idx);
  fprintf(log, "feature cache: the frozen prefix computed once for %lld samples (%lld values each, %.1f MiB %s) in %.1f s\n",
          (long long)train->n, (long long)m->feat_numel, (double)bytes / (1 << 20), where, gr_now() - t0);
  return 1;
}

/* Whether a file can be created at path (its directory exists and is writable): checked before a
 * long run, so that --save does not fail after the work is done. */
static bool can_create(const char *path, gr_diag *d) {
  const char *slash = strrchr(path, '/');
  char dir[4096];
  snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + (slash == path) : 1, slash ? path : ".");
  if (access(dir, W_OK) == 0) return true;
  gr_error(d, gr_loc_file(path), "cannot write here: directory '%s': %s", dir, strerror(errno));
  return false;
}

double gr_run_lr(const gr_schedule *s, double lr, int64_t step, int64_t epochs_done, int64_t steps_per_epoch, int64_t epochs, double mult) {
  int64_t total = s->per_step ? steps_per_epoch * epochs : epochs;
  return gr_schedule_lr(s, lr, s->per_step ? step : epochs_done, total) * mult;
}

void gr_run_rngs(uint64_t seed, gr_rng *order, gr_rng *drop) {
  gr_rng_seed(order, seed ^ 0x5DEECE66DULL);
  gr_rng_seed(drop, seed ^ 0xD50D50D5ULL);
}

void gr_step_scalars(float *scal, const gr_rt_model *m, double lr, int64_t step, int ph, const int64_t *phase_start, gr_rng *drop_rng,
                     double lambda) {
  scal[GR_SCALAR_LR] = (float)lr;
  for (int k = 0; k < m->n_groups; k++) scal[GR_SCALAR_COUNT + k] = (float)(lr * m->lr_mult[k]);
  scal[GR_SCALAR_STEP] = (float)(step + 1);
  for (int j = 1; j <= ph; j++) scal[GR_SCALAR_PHASE_STEP + j - 1] = (float)(step - phase_start[j] + 1);
  scal[GR_SCALAR_SEED] = (float)(gr_rng_next(drop_rng) >> 40); /* < 2^24: exact in a float */
  scal[GR_SCALAR_LAMBDA] = (float)lambda;
}

gr_session *gr_session_next_phase(gr_session *old, const gr_rt_model *m, uint64_t seed, gr_diag *d) {
  gr_session *s = gr_session_new(m, seed, d);
  if (!s) return NULL; /* the old one stays, usable */
  const gr_rt_model *o = old->m;
  for (int i = 0; i < m->n_params; i++) {
    GR_CHECK(i < o->n_params && !strcmp(o->params[i].name, m->params[i].name), "phases differ in their parameters");
    memcpy(s->slab + m->params[i].offset, old->slab + o->params[i].offset, sizeof(float) * (size_t)m->params[i].numel);
  }
  for (int i = 0; i < m->n_states; i++)
    for (int j = 0; j < o->n_states; j++)
      if (!strcmp(o->states[j].name, m->states[i].name))
        memcpy(s->slab + m->states[i].offset, old->slab + o->states[j].offset, sizeof(float) * (size_t)m->states[i].numel);
  gr_session_free(old);
  return s;
}

static int64_t first_non_finite(const float *v, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(v[i])) return i;
  return -1;
}

static bool params_finite(gr_session *s) {
  for (int i = 0; i < s->m->n_params; i++)
    if (first_non_finite(gr_session_param(s, i), s->m->params[i].numel) >= 0) return false;
  return true;
}

/* A step whose loss is not finite: names the first parameter, in the model's order, whose gradient
 * in this step is not finite (where the trouble entered the backward pass), or else whose value is
 * not, at its place in the model file; an error, or a warning when the run goes on (`then`). */
static void report_nan(gr_session *s, const gr_rt_program *p, const uint8_t *arena, float loss, int64_t epoch, int64_t step, double lr,
                       const char *then, gr_diag *d) {
  const gr_rt_model *m = s->m;
  const char *what = isnan(loss) ? "NaN" : isinf(loss) ? "infinite" : NULL;
  char msg[1024];
  int len = snprintf(msg, sizeof msg, "training step %lld (epoch %lld) made %s%s", (long long)step, (long long)epoch,
                     what ? "the loss " : "a parameter NaN or infinite", what ? what : "");
  gr_loc at = {0};
  for (int pass = 0; pass < 2 && !at.file && len < (int)sizeof msg; pass++)
    for (int i = 0; i < m->n_params; i++) {
      const gr_rt_param *q = &m->params[i];
      const float *v = pass ? gr_session_param(s, i) : p->grad_off && p->grad_off[i] >= 0 ? (const float *)(arena + p->grad_off[i]) : NULL;
      int64_t k = v ? first_non_finite(v, q->numel) : -1;
      if (k < 0) continue;
      len += snprintf(msg + len, sizeof msg - (size_t)len, "; the first tensor that is not finite is %s '%s' (element %lld is %s)",
                      pass ? "parameter" : "the gradient of", q->name, (long long)k, isnan(v[k]) ? "NaN" : v[k] > 0 ? "+inf" : "-inf");
      at = q->loc;
      break;
    }
  if (then) {
    gr_warning(d, at, "%s; the step is %s", msg, then);
  } else {
    gr_error(d, at, "%s; lower the learning rate (now %g), or let the plan skip such steps (on_nan: skip) or roll back (on_nan: rollback)", msg, lr);
  }
}

/* How much memory this process may still use: the smaller of the kernel's estimate of available
 * memory (MemAvailable), the address-space limit (ulimit -v) and the cgroup's memory.max; -1 if none
 * is known. *what names the one that binds. */
static int64_t memory_limit(const char **what) {
  int64_t best = -1;
  FILE *f = fopen("/proc/meminfo", "r");
  char line[256];
  long long kb;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) best = kb * 1024, *what = "available memory (MemAvailable in /proc/meminfo)";
  if (f) fclose(f);
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (best < 0 || (int64_t)rl.rlim_cur < best))
    best = (int64_t)rl.rlim_cur, *what = "the address-space limit (ulimit -v)";
  f = fopen("/sys/fs/cgroup/memory.max", "r");
  if (f && fscanf(f, "%lld", &kb) == 1 && (best < 0 || kb < best)) best = kb, *what = "the cgroup's memory.max";
  if (f) fclose(f);
  return best;
}

/* Refuses, before anything is allocated, a plan whose largest phase needs more memory than the
 * process may use: parameters and optimizer state, and the training and evaluation arenas (the
 * feature cache is sized later, and goes to a file or away when it does not fit). */
static bool memory_fits(const gr_train_phase *phases, int n_phases, gr_diag *d) {
  const char *what = "";
  int64_t limit = memory_limit(&what);
  for (int k = 0; k < n_phases && limit > 0; k++) {
    const gr_rt_model *m = phases[k].m;
    int64_t need = m->slab_bytes + m->train.arena_bytes + m->eval.arena_bytes;
    if (need <= limit) continue;
    gr_error(d, (gr_loc){0},
             "the plan needs %.0f MiB%s (parameters and optimizer state %.0f MiB, training arena %.0f MiB, evaluation arena %.0f MiB) "
             "but %s is %.0f MiB; lower batch_size or freeze more",
             (double)need / (1 << 20), n_phases > 1 ? " in one of its phases" : "", (double)m->slab_bytes / (1 << 20),
             (double)m->train.arena_bytes / (1 << 20), (double)m->eval.arena_bytes / (1 << 20), what, (double)limit / (1 << 20));
    return false;
  }
  return true;
}

/* A resumed run: the checkpoint read and checked against this run, *s replaced by a session of the
 * checkpoint's phase holding its parameters and optimizer state. False after reporting. */
static bool resume(const gr_train_phase *phases, int n_phases, const gr_train_cfg *cfg, gr_session **s, gr_ckpt_pos *at, int64_t B,
                   int64_t samples, FILE *log, gr_diag *d) {
  gr_st_file f;
  char *used = NULL;
  if (!gr_checkpoint_open(cfg->resume, &f, at, &used, log, d)) return false;
  gr_loc l = gr_loc_file(used);
  bool ok = false;
  if (at->n_phases != n_phases)
    gr_error(d, l, "the checkpoint is of a run in %d phase%s, this plan has %d", at->n_phases, at->n_phases == 1 ? "" : "s", n_phases);
  else if (at->seed != cfg->seed)
    gr_error(d, l, "the checkpoint is of a run with seed %llu, this run's is %llu", (unsigned long long)at->seed, (unsigned long long)cfg->seed);
  else if (at->batch_size != B || at->samples != samples)
    gr_error(d, l, "the checkpoint is of a run with batch %lld on %lld samples, this run has batch %lld on %lld", (long long)at->batch_size,
             (long long)at->samples, (long long)B, (long long)samples);
  else
    ok = true;
  if (ok && at->phase > 0) { /* the checkpoint's phase has its own trainable set */
    gr_session *ns = gr_session_new(phases[at->phase].m, cfg->seed, d);
    ok = ns != NULL;
    if (ok) {
      gr_session_free(*s);
      *s = ns;
    }
  }
  ok = ok && gr_checkpoint_restore(*s, &f, d);
  if (ok)
    fprintf(log, "resuming from %s: %s epoch %lld, step %lld\n", used, at->batch > 0 ? "in" : "after", (long long)at->epoch + (at->batch > 0),
            (long long)at->step);
  gr_st_close(&f);
  free(used);
  return ok;
}

/* Image folders: the test folder's classes must be the training folder's, in the same order, or the
 * labels would mean different things. */
static bool same_classes(const gr_dataset *train, const gr_dataset *test, gr_diag *d) {
  int n = gr_dataset_class_count(train);
  for (int k = 0; k < n || k < gr_dataset_class_count(test); k++) {
    const char *a = gr_dataset_class_name(train, k), *b = gr_dataset_class_name(test, k);
    if (!a || !b || strcmp(a, b)) {
      gr_error(d, gr_loc_file(test->images_path), "the test folder's class sub-folders differ from the training folder's (%s): class %d is '%s' here but '%s' there",
               train->images_path, k, b ? b : "(none)", a ? a : "(none)");
      return false;
    }
  }
  return true;
}

static int64_t trainable_count(const gr_rt_model *m) {
  int64_t n = 0;
  for (int i = 0; i < m->n_params; i++)
    if (m->params[i].trainable) n += m->params[i].numel;
  return n;
}

bool gr_train(const gr_rt_model *m, const gr_train_cfg *cfg, gr_diag *d, gr_train_result *res) {
  gr_train_phase one = {m, cfg->epochs, 1.0};
  return gr_train_phases(&one, 1, cfg, d, res);
}

bool gr_train_phases(const gr_train_phase *phases, int n_phases, const gr_train_cfg *cfg, gr_diag *d, gr_train_result *res) {
  GR_CHECK(n_phases >= 1 && n_phases <= GR_MAX_PHASES, "%d training phases", n_phases);
  const gr_rt_model *m = phases[0].m;
  int64_t epochs = 0;
  for (int i = 0; i < n_phases; i++) epochs += phases[i].epochs;
  memset(res, 0, sizeof *res);
  if (cfg->save_path && !can_create(cfg->save_path, d)) return false;
  res->test_loss = res->test_accuracy = res->target_accuracy = res->domain_accuracy = NAN;
  FILE *log = cfg->log ? cfg->log : stdout;
  if (cfg->threads > 0) gr_set_threads(cfg->threads);
  /* the cheap checks first (memory, weights), then the data sets, which take seconds to decode */
  if (!memory_fits(phases, n_phases, d)) return false;
  gr_session *s = gr_session_new(m, cfg->seed, d);
  if (s && cfg->init_path && !gr_session_load(s, cfg->init_path, &cfg->init_opts, log, d)) {
    if (cfg->init_loc.file) gr_note(d, cfg->init_loc, "in the weights named here");
    gr_session_free(s);
    return false;
  }
  if (!s) return false;
  gr_dataset train = {0}, test = {0}, tgt = {0}, tgt_test = {0}; /* tgt*: domain adaptation's target data */
  gr_metrics *metrics = NULL;
  bool dann = m->domain;
  GR_CHECK(!dann || cfg->target_images, "a domain-adaptation model without target data");
  bool loaded = gr_dataset_load(&train, cfg->data_format, cfg->train_images, cfg->train_labels, &cfg->pixels, m, &cfg->train_select, d);
  if (!loaded && cfg->train_loc.file) gr_note(d, cfg->train_loc, "in the training data named here");
  if (loaded && cfg->test_images) {
    loaded = gr_dataset_load(&test, cfg->data_format, cfg->test_images, cfg->test_labels, &cfg->pixels, m, &cfg->test_select, d) &&
             same_classes(&train, &test, d);
    if (!loaded && cfg->test_loc.file) gr_note(d, cfg->test_loc, "in the test data named here");
  }
  if (loaded && dann) {
    loaded = gr_dataset_load(&tgt, cfg->data_format, cfg->target_images, cfg->target_labels, &cfg->pixels, m, NULL, d);
    if (!loaded && cfg->target_loc.file) gr_note(d, cfg->target_loc, "in the target training data named here");
    if (loaded && cfg->target_test_images) {
      loaded = gr_dataset_load(&tgt_test, cfg->data_format, cfg->target_test_images, cfg->target_test_labels, &cfg->pixels, m, NULL, d) &&
               same_classes(&train, &tgt_test, d);
      if (!loaded && cfg->target_test_loc.file) gr_note(d, cfg->target_test_loc, "in the target test data named here");
    }
    if (loaded && tgt.n == 0) {
      gr_error(d, cfg->target_loc, "the target training data has no samples");
      loaded = false;
    }
  }
  if (!loaded || (cfg->metrics_path && !(metrics = gr_metrics_open(cfg->metrics_path, cfg->resume != NULL, d)))) {
    gr_session_free(s);
    gr_dataset_free(&train);
    gr_dataset_free(&test);
    gr_dataset_free(&tgt);
    gr_dataset_free(&tgt_test);
    return false;
  }
  fprintf(log, "training on %lld samples", (long long)train.n);
  if (dann) fprintf(log, " and %lld target samples", (long long)tgt.n);
  if (test.n) fprintf(log, ", evaluating on %lld", (long long)test.n);
  if (tgt_test.n) fprintf(log, " and %lld target samples", (long long)tgt_test.n);
  fprintf(log, ", batch %lld, %lld epoch%s\n", (long long)m->max_batch, (long long)epochs, epochs == 1 ? "" : "s");
  bool augment = train.img && (cfg->pixels.random_crop || cfg->pixels.flip);
  gr_rng rng, drop_rng;
  gr_run_rngs(cfg->seed, &rng, &drop_rng);
  int64_t *perm = malloc(sizeof(int64_t) * (size_t)train.n);
  GR_CHECK(perm != NULL, "out of memory");
  for (int64_t i = 0; i < train.n; i++) perm[i] = i;
  int64_t B = m->max_batch, steps_per_epoch = (train.n + B - 1) / B, step = 0;
  /* a step takes sb source rows (domain adaptation: and tb target rows, the last partial batch of
   * source rows dropped) from the epoch's first epoch_rows of the shuffle */
  int64_t sb = B, tb = 0, epoch_rows = train.n;
  target_stream ts = {.ds = &tgt, .pass = -1, .seed = cfg->seed, .shuffle = cfg->shuffle};
  int64_t *tidx = NULL;
  if (dann) {
    sb = gr_source_rows(B, cfg->source_fraction);
    tb = ts.rows = B - sb;
    steps_per_epoch = train.n / sb > 0 ? train.n / sb : 1;
    epoch_rows = train.n < sb ? train.n : steps_per_epoch * sb;
    ts.perm = malloc(sizeof(int64_t) * (size_t)(tgt.n + tb));
    tidx = ts.perm + tgt.n;
    GR_CHECK(ts.perm != NULL, "out of memory");
    fprintf(log, "domain adaptation: %lld source and %lld target rows a step, %lld steps an epoch\n", (long long)sb, (long long)tb,
            (long long)steps_per_epoch);
  }
  float scal[GR_SCALAR_TOTAL] = {[GR_SCALAR_LAMBDA] = 1};
  /* where the run is, as a checkpoint records it: phase_start is the step at which each phase began */
  gr_ckpt_pos run = {.n_phases = n_phases, .seed = cfg->seed, .batch_size = B, .samples = train.n};
  double lr = cfg->lr;
  gr_progress prog;
  gr_progress_init(&prog, log);
  double train_time = 0;
  int64_t samples = 0, epoch = 0;
  bool ok = true;
  feature_cache cache = {0}; /* when the phase's model has one that fits */
  gr_ckpt_pos at = {0};      /* where a resumed run starts */
  uint8_t *snap = NULL;      /* on_nan: skip: the slab before the step */
  int64_t skipped = 0;       /* bad steps skipped in a row */
  bool rollback = false;     /* on_nan: rollback: the run goes back to its last checkpoint */
  bool resumed = cfg->resume != NULL;
  int start_ph = 0;
  int64_t start_pe = 1, start_b = 0, last_ckpt = -1;
  if (resumed) {
    ok = resume(phases, n_phases, cfg, &s, &at, B, train.n, log, d);
    if (ok) {
      int64_t before = 0; /* the epochs of the phases before the checkpoint's */
      for (int k = 0; k < at.phase; k++) before += phases[k].epochs;
      start_ph = at.phase;
      start_pe = at.epoch - before + 1;
      start_b = at.batch;
      if (start_b == 0 && start_pe > phases[start_ph].epochs) { /* at the end of its phase: the next one starts */
        start_ph++;
        start_pe = 1;
      }
      step = last_ckpt = at.step;
      epoch = at.epoch;
      memcpy(run.phase_start, at.phase_start, sizeof run.phase_start);
      /* the generators replayed to where the run stopped: the epochs' shuffles, a dropout seed per step */
      for (int64_t e = 0; cfg->shuffle && e < at.epoch + (at.batch > 0); e++) gr_rng_shuffle(&rng, perm, train.n);
      for (int64_t k = 0; k < at.step; k++) gr_rng_next(&drop_rng);
      if (start_ph == n_phases) fprintf(log, "the checkpoint is at the end of the run: nothing left to train\n");
    }
  }
  for (int ph = start_ph; ph < n_phases && ok; ph++) {
    m = phases[ph].m;
    bool own_session = resumed ? ph == at.phase : ph == 0; /* else the previous phase's carries over */
    gr_session *ns = own_session ? s : gr_session_next_phase(s, m, cfg->seed, d);
    if (!ns) {
      ok = false;
      break;
    }
    s = ns;
    if (!(resumed && ph == at.phase)) run.phase_start[ph] = step;
    run.phase = ph;
    if (cfg->on_nan == GR_NAN_SKIP) {
      free(snap);
      snap = malloc((size_t)m->slab_bytes + 1);
      GR_CHECK(snap != NULL, "out of memory");
    }
    int64_t first_epoch = 1; /* the phase's */
    for (int k = 0; k < ph; k++) first_epoch += phases[k].epochs;
    if (n_phases > 1)
      fprintf(log, "phase %d/%d: epochs %lld-%lld, %lld trainable parameters, learning rate x%g\n", ph + 1, n_phases, (long long)first_epoch,
              (long long)(first_epoch + phases[ph].epochs - 1), (long long)trainable_count(m), phases[ph].lr_mult);
    const gr_rt_program *p = &m->train;
    const gr_dataset *src = &train;
    uint8_t *arena = s->train_arena;
    cache_free(&cache);
    for (int64_t pe = ph == start_ph ? start_pe : 1; pe <= phases[ph].epochs && ok; pe++) {
      bool first = ph == start_ph && pe == start_pe; /* the first epoch this process runs */
      int64_t b0 = first ? start_b * sb : 0;    /* a resumed run continues mid-epoch */
      epoch++;
      if (cfg->shuffle && b0 == 0) gr_rng_shuffle(&rng, perm, train.n);
      double t_epoch = gr_now(), win_loss = 0, ep_loss = 0;
      int cached = pe == 1 || first ? build_cache(s, &train, augment, &cache, log, d) : 0; /* part of the phase's first epoch's time */
      if (cached < 0) {
        ok = false;
        break;
      }
      if (cached) {
        p = &m->train_cached;
        src = &cache.ds;
        arena = s->cached_arena;
      }
      int64_t win_n = 0, win_correct = 0, win_counted = 0, ep_n = 0;
      double t_win = t_epoch;
      for (int64_t b = b0; b < epoch_rows; b += sb) {
        int64_t n = epoch_rows - b < sb ? epoch_rows - b : sb;
        lr = gr_run_lr(&cfg->schedule, cfg->lr, step, epoch - 1, steps_per_epoch, epochs, phases[ph].lr_mult);
        double lambda = dann ? gr_dann_lambda(cfg, (double)step / (double)(steps_per_epoch * epochs)) : 1;
        gr_step_scalars(scal, m, lr, step, ph, run.phase_start, &drop_rng, lambda);
        uint64_t aug_seed = cfg->seed ^ ((uint64_t)step << 20) ^ 0xA5A5F00DULL; /* a training image's crop and flip */
        if (!gr_gather(p, arena, src, perm + b, n, augment, aug_seed, d)) {
          ok = false;
          break;
        }
        if (dann) target_rows(&ts, step, tidx);
        if (dann && !gather_target(p, arena, &tgt, tidx, n, tb, cfg->label_on, aug_seed, d)) {
          ok = false;
          break;
        }
        if (b + sb < epoch_rows) /* the next batch is decoded while this one trains */
          gr_dataset_prefetch(src, perm + b + sb, epoch_rows - b - sb < sb ? epoch_rows - b - sb : sb, augment,
                              cfg->seed ^ ((uint64_t)(step + 1) << 20) ^ 0xA5A5F00DULL);
        if (p->dloss_off >= 0) *(float *)(arena + p->dloss_off) = 1.0f; /* absent when only batchnorm statistics move */
        if (snap) memcpy(snap, s->slab, (size_t)m->slab_bytes); /* on_nan: skip undoes a bad step with it */
        gr_fault("before_step"); /* benchmarks: the time from process start to the first step (bench/startup.sh) */
        p->fn(s->slab, arena, n + tb, scal);
        step++;
        gr_fault("step"); /* tests: a crash mid-run, the step's updates made but not recorded */
        float loss = *(float *)(arena + p->loss_off);
        if (!isfinite(loss) || (snap && !params_finite(s))) { /* skip mode also catches updates that overflow */
          bool skip = snap && skipped < GR_NAN_MAX_SKIPS;
          rollback = cfg->on_nan == GR_NAN_ROLLBACK && last_ckpt >= 0 && cfg->rollbacks < GR_NAN_MAX_ROLLBACKS;
          fflush(log); /* the diagnostics (stderr) after what the log said before them */
          report_nan(s, p, arena, loss, epoch, step, lr, skip ? "skipped (on_nan: skip)" : rollback ? "rolled back" : NULL, d);
          if (snap && !skip) gr_note(d, (gr_loc){0}, "on_nan: skip gives up after %d bad steps in a row", GR_NAN_MAX_SKIPS);
          if (cfg->on_nan == GR_NAN_ROLLBACK && !rollback)
            gr_note(d, (gr_loc){0}, last_ckpt < 0 ? "on_nan: rollback had no checkpoint to go back to yet"
                                                  : "on_nan: rollback gives up after %d rollbacks", GR_NAN_MAX_ROLLBACKS);
          if (skip) { /* the step undone; it still counts in the step number */
            memcpy(s->slab, snap, (size_t)m->slab_bytes);
            skipped++;
            continue;
          }
          ok = false;
          break;
        }
        skipped = 0;
        if (dann)
          gr_metrics_record(metrics, "domain", "epoch#", (double)epoch, "step#", (double)step, "lr", lr, "lambda", lambda, "label_loss",
                            (double)*(float *)(arena + p->label_loss_off), "domain_loss", (double)*(float *)(arena + p->dom_loss_off),
                            "domain_accuracy",
                            (double)(count_domain((float *)(arena + p->dom_out_off), n, 0) +
                                     count_domain((float *)(arena + p->dom_out_off) + 2 * n, tb, 1)) / (double)(n + tb), NULL);
        if (cfg->ckpt_dir && cfg->ckpt_every_steps > 0 && step % cfg->ckpt_every_steps == 0) {
          int64_t done = b / sb + 1; /* batches of this epoch done */
          run.epoch = done == steps_per_epoch ? epoch : epoch - 1;
          run.batch = done == steps_per_epoch ? 0 : done;
          run.step = step;
          if (!(ok = gr_checkpoint_write(s, cfg->ckpt_dir, &run, cfg->ckpt_keep, prog.tty ? NULL : log, d))) break;
          last_ckpt = step;
        }
        win_loss += (double)loss * (double)(n + tb);
        ep_loss += (double)loss * (double)(n + tb);
        win_n += n + tb;
        ep_n += n + tb;
        if (p->out_off >= 0) {
          int64_t k;
          win_correct += count_correct(m, (float *)(arena + p->out_off), arena + p->y_off, n + tb, &k);
          win_counted += k;
        }
        int64_t in_epoch = b / sb + 1;
        double now = gr_now(), rate = (double)ep_n / (now - t_epoch + 1e-12);
        double step_time = (now - t_epoch) / (double)(in_epoch - b0 / sb);
        double eta = ((double)(steps_per_epoch - in_epoch) + (double)(epochs - epoch) * (double)steps_per_epoch) * step_time;
        bool log_now = step % cfg->log_every == 0;
        if (!cfg->quiet && (prog.tty || log_now))
          gr_progress_step(&prog, epoch, epochs, in_epoch, steps_per_epoch, ep_loss / (double)ep_n, rate, eta, false);
        if (log_now) {
          gr_metrics_record(metrics, "train", "epoch#", (double)epoch, "step#", (double)step, "loss", win_loss / (double)win_n,
                            "accuracy", ratio(m, win_correct, win_counted), "samples_per_s", (double)win_n / (now - t_win + 1e-12),
                            "lr", lr, NULL);
          win_loss = 0;
          win_n = win_correct = win_counted = 0;
          t_win = now;
        }
      }
      if (!ok) break;
      if (win_n) { /* the steps since the last record: every step is in exactly one training record */
        double now = gr_now();
        gr_metrics_record(metrics, "train", "epoch#", (double)epoch, "step#", (double)step, "loss", win_loss / (double)win_n,
                          "accuracy", ratio(m, win_correct, win_counted), "samples_per_s", (double)win_n / (now - t_win + 1e-12),
                          "lr", lr, NULL);
      }
      double ep_time = gr_now() - t_epoch;
      train_time += ep_time;
      samples += ep_n;
      gr_progress_clear(&prog);
      res->final_train_loss = ep_loss / (double)ep_n;
      fprintf(log, "epoch %lld/%lld: train loss %.4f (%.1f s, %.0f samples/s)", (long long)epoch, (long long)epochs,
              res->final_train_loss, ep_time, (double)ep_n / ep_time);
      bool eval_now = cfg->eval_every <= 1 || epoch % cfg->eval_every == 0 || epoch == epochs;
      int64_t dom_right[2] = {0, 0};
      if (test.n && eval_now) {
        if (!gr_session_evaluate_domain(s, &test, 0, &res->test_loss, &res->test_accuracy, &dom_right[0], d)) {
          ok = false;
          break;
        }
        fprintf(log, ", test loss %.4f", res->test_loss);
        if (!isnan(res->test_accuracy)) fprintf(log, ", test accuracy %.4f", res->test_accuracy);
        gr_metrics_record(metrics, "test", "epoch#", (double)epoch, "step#", (double)step, "loss", res->test_loss, "accuracy",
                          res->test_accuracy, NULL);
      }
      if (tgt_test.n && eval_now) { /* domain adaptation: the target test set, and the domain head on both */
        double tl;
        if (!gr_session_evaluate_domain(s, &tgt_test, 1, &tl, &res->target_accuracy, &dom_right[1], d)) {
          ok = false;
          break;
        }
        res->domain_accuracy = (double)(dom_right[0] + dom_right[1]) / (double)(test.n + tgt_test.n);
        fprintf(log, ", target test accuracy %.4f, domain accuracy %.4f", res->target_accuracy, res->domain_accuracy);
        gr_metrics_record(metrics, "target_test", "epoch#", (double)epoch, "step#", (double)step, "loss", tl, "accuracy",
                          res->target_accuracy, "domain_accuracy", res->domain_accuracy, NULL);
      }
      fputc('\n', log);
      fflush(log);
      if (cfg->ckpt_dir && cfg->ckpt_every_epoch && last_ckpt != step) {
        run.epoch = epoch;
        run.batch = 0;
        run.step = step;
        if (!(ok = gr_checkpoint_write(s, cfg->ckpt_dir, &run, cfg->ckpt_keep, log, d))) break;
        last_ckpt = step;
      }
    }
  }
  res->steps = step;
  res->samples_per_s = train_time > 0 ? (double)samples / train_time : 0;
  if (ok && test.n && !isnan(res->test_accuracy)) fprintf(log, "final test accuracy: %.4f\n", res->test_accuracy);
  else if (ok && test.n) fprintf(log, "final test loss: %.6g\n", res->test_loss);
  if (ok && tgt_test.n) fprintf(log, "final target test accuracy: %.4f\nfinal domain accuracy: %.4f\n", res->target_accuracy, res->domain_accuracy);
  if (ok && cfg->save_path) {
    ok = gr_session_save(s, cfg->save_path, d);
    if (ok) fprintf(log, "saved %d parameters to %s\n", m->n_params, cfg->save_path);
  }
  free(perm);
  free(ts.perm);
  free(snap);
  cache_free(&cache); /* its labels are the training set's */
  gr_session_free(s);
  gr_metrics_close(metrics);
  gr_dataset_free(&train);
  gr_dataset_free(&test);
  gr_dataset_free(&tgt);
  gr_dataset_free(&tgt_test);
  if (rollback) { /* the run again from its last checkpoint, at half the learning rate */
    gr_train_cfg again = *cfg;
    again.resume = cfg->ckpt_dir;
    again.lr = cfg->lr * 0.5;
    again.rollbacks = cfg->rollbacks + 1;
    again.init_path = NULL;
    fprintf(log, "on_nan: rollback %d of at most %d: back to the last checkpoint, learning rate x0.5 (base now %g)\n", again.rollbacks,
            GR_NAN_MAX_ROLLBACKS, again.lr);
    return gr_train_phases(phases, n_phases, &again, d, res);
  }
  return ok;
}
