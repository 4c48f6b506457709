/* artifact.c — a compiled plan's description to bytes and back (see artifact.h). The writer and the
 * reader walk the same fields in the same order through one function per structure, each taking an
 * `io` that either appends a field or reads it back, so the two cannot drift apart. */
#include "runtime/artifact.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct io {
  bool reading;
  uint8_t *buf; /* writing: grows */
  size_t len, cap;
  const uint8_t *in; /* reading */
  size_t size, pos;
  bool bad;      /* reading ran past the end or met an impossible value */
  gr_arena *a;   /* reading: strings and arrays go here */
} io;

/* One field of n bytes: appended, or read into p. */
static void field(io *s, void *p, size_t n) {
  if (s->reading) {
    if (s->bad || n > s->size - s->pos) {
      s->bad = true;
      memset(p, 0, n);
      return;
    }
    memcpy(p, s->in + s->pos, n);
    s->pos += n;
    return;
  }
  if (s->len + n > s->cap) {
    s->cap = (s->len + n) * 2 + 256;
    s->buf = realloc(s->buf, s->cap);
    GR_CHECK(s->buf != NULL, "out of memory");
  }
  memcpy(s->buf + s->len, p, n);
  s->len += n;
}
/* (the fields are written in the host's byte order: artifacts are for little-endian x86-64 and
 * AArch64, and the reader checks the magic, which would not match on a big-endian host) */

static void i64(io *s, int64_t *v) { field(s, v, 8); }
static void f64(io *s, double *v) { field(s, v, 8); }
static void f32(io *s, float *v) { field(s, v, 4); }
static void flag(io *s, bool *v) {
  uint8_t b = *v;
  field(s, &b, 1);
  if (b > 1) s->bad = true;
  *v = b;
}
static void int32(io *s, int *v, int lo, int hi) {
  int32_t x = *v;
  field(s, &x, 4);
  if (x < lo || x > hi) s->bad = true, x = lo;
  *v = x;
}
static void str(io *s, const char **v) {
  int64_t n = *v ? (int64_t)strlen(*v) : -1;
  i64(s, &n);
  if (!s->reading) {
    if (n > 0) field(s, (void *)*v, (size_t)n);
    return;
  }
  if (n < -1 || n > (int64_t)(s->size - s->pos)) s->bad = true, n = -1;
  char *t = n >= 0 ? gr_alloc(s->a, (size_t)n + 1) : NULL;
  if (t) field(s, t, (size_t)n);
  *v = t;
}
/* An array of n elements of elem bytes, allocated when reading. */
static void *array(io *s, const void *v, int64_t n, size_t elem) {
  if (!s->reading) return (void *)v;
  if (n < 0 || (uint64_t)n > (s->size - s->pos) / (elem ? elem : 1)) {
    s->bad = true;
    n = 0;
  }
  return gr_alloc(s->a, elem * (size_t)n + 1);
}

static void shape(io *s, gr_shape *v) {
  int32(s, &v->rank, 0, GR_MAX_RANK);
  for (int i = 0; i < GR_MAX_RANK; i++) i64(s, &v->dim[i]);
}

static void param(io *s, gr_rt_param *p) {
  str(s, &p->name);
  i64(s, &p->offset);
  shape(s, &p->shape);
  i64(s, &p->numel);
  f32(s, &p->init_bound);
  f32(s, &p->init_value);
  f32(s, &p->init_std);
  i64(s, &p->zero_row);
  flag(s, &p->trainable);
  flag(s, &p->buffer);
  if (s->reading && (p->offset < 0 || p->numel < 0)) s->bad = true;
}

static void params(io *s, int *n, gr_rt_param **v) {
  int32(s, n, 0, 1 << 24);
  *v = array(s, *v, *n, sizeof **v);
  if (s->bad) *n = 0;
  for (int i = 0; i < *n && !s->bad; i++) param(s, &(*v)[i]);
}

/* A program; `present` (writing): whether the model has it (the feature cache's two only with a cache). */
static void program(io *s, gr_rt_program *p, bool present, int n_params, int64_t step, gr_step_fn const *steps, uint64_t n_steps) {
  int64_t index = present ? step : -1, *o[] = {&p->arena_bytes, &p->x_off, &p->y_off, &p->dloss_off, &p->loss_off,
                                                            &p->out_off, &p->dom_y_off, &p->dom_out_off, &p->label_loss_off,
                                                            &p->dom_loss_off};
  i64(s, &index);
  str(s, &p->name);
  for (size_t k = 0; k < sizeof o / sizeof *o; k++) i64(s, o[k]);
  bool grads = p->grad_off != NULL;
  flag(s, &grads);
  int64_t *g = grads ? array(s, p->grad_off, n_params, sizeof(int64_t)) : NULL;
  for (int i = 0; grads && i < n_params && !s->bad; i++) i64(s, &g[i]);
  if (!s->reading) return;
  p->grad_off = g;
  if (index >= 0 && (uint64_t)index != (uint64_t)step) s->bad = true; /* the table's order is fixed */
  p->fn = index >= 0 && (uint64_t)index < n_steps ? steps[index] : NULL;
  if (index >= 0 && !p->fn) s->bad = true;
  if (p->fn && p->arena_bytes < 0) s->bad = true;
}

/* A tensor of the slab: a name, a shape whose elements it counts, inside the slab, 4-byte aligned. */
static bool slab_tensor_ok(const gr_rt_param *p, int64_t slab) {
  int64_t numel = 1;
  for (int i = 0; i < p->shape.rank; i++) {
    if (p->shape.dim[i] < 0 || (p->shape.dim[i] && numel > INT64_MAX / p->shape.dim[i])) return false;
    numel *= p->shape.dim[i];
  }
  return p->name && numel == p->numel && p->offset >= 0 && p->offset % 4 == 0 && p->offset <= slab && p->numel <= (slab - p->offset) / 4 &&
         (p->zero_row == -1 || (p->shape.rank > 0 && p->zero_row >= 0 && p->zero_row < p->shape.dim[0]));
}

/* An arena offset: absent (-1) or inside the arena. */
static bool arena_ok(int64_t off, int64_t arena) { return off == -1 || (off >= 0 && off < arena); }

/* What the runtime relies on in a decoded model: f32, tensors inside the slab, the programs' slots
 * inside their arenas (those it writes and reads present), integer inputs bounded. */
static bool model_ok(const gr_rt_model *m) {
  if (m->dtype != GR_F32 || m->max_batch < 1 || m->slab_bytes < 0 || m->n_classes < 1 || m->sample_numel < 1 || m->target_numel < 0 ||
      (m->in_dtype == GR_I32 && m->in_limit < 1) || m->feat_numel < 0 || (m->in_dtype != GR_F32 && m->in_dtype != GR_I32))
    return false;
  for (int i = 0; i < m->n_params; i++)
    if (!slab_tensor_ok(&m->params[i], m->slab_bytes)) return false;
  for (int i = 0; i < m->n_states; i++)
    if (!slab_tensor_ok(&m->states[i], m->slab_bytes)) return false;
  for (int k = 0; k < 4; k++) {
    const gr_rt_program *p = gr_artifact_program(m, k);
    if (!p->fn) {
      if (k < 2 || m->feat_numel > 0) return false; /* train and eval always; the cache's two with a cache */
      continue;
    }
    int64_t a = p->arena_bytes, o[] = {p->x_off, p->y_off, p->dloss_off, p->loss_off, p->out_off, p->dom_y_off, p->dom_out_off,
                                       p->label_loss_off, p->dom_loss_off};
    if (a < 0 || p->x_off < 0 || (k != 2 && (p->y_off < 0 || p->loss_off < 0)) || (k == 1 && p->out_off < 0) || (k == 2 && p->out_off < 0))
      return false;
    for (size_t j = 0; j < sizeof o / sizeof *o; j++)
      if (!arena_ok(o[j], a)) return false;
    for (int i = 0; p->grad_off && i < m->n_params; i++)
      if (!arena_ok(p->grad_off[i], a)) return false;
  }
  return true;
}

static void model(io *s, gr_rt_model *m, int phase, gr_step_fn const *steps, uint64_t n_steps) {
  int dtype = (int)m->dtype, in_dtype = (int)m->in_dtype, acc = (int)m->accuracy;
  int32(s, &dtype, 0, GR_DTYPE_COUNT - 1);
  m->dtype = (gr_dtype)dtype;
  i64(s, &m->max_batch);
  i64(s, &m->slab_bytes);
  params(s, &m->n_params, &m->params);
  shape(s, &m->in_shape);
  i64(s, &m->sample_numel);
  int32(s, &in_dtype, 0, GR_DTYPE_COUNT - 1);
  m->in_dtype = (gr_dtype)in_dtype;
  i64(s, &m->in_limit);
  i64(s, &m->n_classes);
  i64(s, &m->target_numel);
  int32(s, &acc, 0, GR_ACC_NONE);
  m->accuracy = (gr_accuracy)acc;
  params(s, &m->n_states, &m->states);
  int32(s, &m->n_groups, 0, GR_MAX_GROUPS);
  for (int k = 0; k < GR_MAX_GROUPS; k++) f64(s, &m->lr_mult[k]);
  flag(s, &m->domain);
  i64(s, &m->feat_numel);
  i64(s, &m->cache_budget);
  flag(s, &m->cache_spill);
  str(s, &m->cache_dir);
  for (int k = 0; k < 4; k++)
    program(s, (gr_rt_program *)gr_artifact_program(m, k), k < 2 || m->feat_numel > 0, m->n_params, gr_artifact_step(phase, k), steps,
            n_steps);
  if (s->reading && !s->bad && !model_ok(m)) s->bad = true;
}

/* The whole description: header, run, phases. */
static void run_desc(io *s, gr_run *r, gr_artifact_info *info, gr_step_fn const *steps, uint64_t n_steps) {
  char magic[8] = "GRAFTDSC";
  int version = GR_ARTIFACT_DESC_VERSION;
  field(s, magic, 8);
  int32(s, &version, GR_ARTIFACT_DESC_VERSION, GR_ARTIFACT_DESC_VERSION);
  if (s->reading && memcmp(magic, "GRAFTDSC", 8)) s->bad = true;
  int layout[3] = {GR_SCALAR_COUNT, GR_MAX_GROUPS, GR_SCALAR_TOTAL}; /* the step functions' scalars (model.h) */
  for (int k = 0; k < 3; k++) int32(s, &layout[k], layout[k], layout[k]);
  str(s, &info->name);
  str(s, &info->cpu);
  str(s, &info->features);
  i64(s, (int64_t *)&r->seed);
  flag(s, &r->shuffle);
  f64(s, &r->lr);
  gr_schedule *sc = &r->schedule;
  int kind = (int)sc->kind;
  int32(s, &kind, 0, GR_SCHED_COUNT - 1);
  sc->kind = (gr_sched_kind)kind;
  flag(s, &sc->per_step);
  i64(s, &sc->step_size);
  f64(s, &sc->gamma);
  int32(s, &sc->n_milestones, 0, GR_SCHED_MAX_MILESTONES);
  for (int k = 0; k < GR_SCHED_MAX_MILESTONES; k++) i64(s, &sc->milestones[k]);
  f64(s, &sc->min_lr);
  i64(s, &sc->warmup);
  f64(s, &sc->warmup_factor);
  f64(s, &sc->alpha);
  f64(s, &sc->beta);
  int32(s, &r->n_phases, 1, GR_MAX_PHASES);
  for (int k = 0; k < r->n_phases && !s->bad; k++) {
    gr_train_phase *ph = &r->phases[k];
    i64(s, &ph->epochs);
    f64(s, &ph->lr_mult);
    gr_rt_model *m = s->reading ? gr_alloc(s->a, sizeof *m) : (gr_rt_model *)ph->m;
    model(s, m, k, steps, n_steps);
    ph->m = m;
  }
}

uint8_t *gr_artifact_encode(const gr_run *run, const gr_artifact_info *info, size_t *size) {
  io s = {.reading = false};
  gr_run r = *run;
  gr_artifact_info i = *info;
  run_desc(&s, &r, &i, NULL, 0);
  *size = s.len;
  return s.buf;
}

bool gr_artifact_decode(const uint8_t *desc, size_t size, gr_step_fn const *steps, uint64_t n_steps, gr_arena *a, gr_run *run,
                        gr_artifact_info *info, gr_diag *d) {
  io s = {.reading = true, .in = desc, .size = size, .a = a};
  memset(run, 0, sizeof *run);
  memset(info, 0, sizeof *info);
  run_desc(&s, run, info, steps, n_steps);
  if (!s.bad && s.pos != size) s.bad = true;
  if (!s.bad && (!info->name || !info->cpu || !info->features)) s.bad = true;
  for (int k = 1; k < run->n_phases && !s.bad; k++) { /* the phases share their parameters, in order */
    const gr_rt_model *p0 = run->phases[0].m, *pk = run->phases[k].m;
    if (p0->n_params != pk->n_params || p0->max_batch != pk->max_batch || p0->sample_numel != pk->sample_numel || p0->n_classes != pk->n_classes)
      s.bad = true;
    for (int i = 0; i < p0->n_params && !s.bad; i++)
      if (strcmp(p0->params[i].name, pk->params[i].name) || p0->params[i].numel != pk->params[i].numel) s.bad = true;
  }
  if (s.bad) gr_error(d, (gr_loc){0}, "the compiled plan's description is damaged (at byte %zu of %zu): rebuild it with graft compile", s.pos, size);
  return !s.bad;
}
