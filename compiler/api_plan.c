/* api_plan.c — a whole plan compiled for running from a program (graft_open_plan in include/graft.h)
 * or for writing out (graft compile, aot.c): every phase of gradual unfreezing compiled, the run the
 * plan describes, and its initial weights. */
#include "compiler/compiler.h"
#include "runtime/api.h"
#include <stdlib.h>
#include <string.h>

gr_load_opts gr_plan_load_opts(gr_compiled *c) {
  const gr_transfer *t = &c->plan.tl;
  const char **ex = gr_alloc(&c->arena, sizeof(char *) * (size_t)(t->exclude.n + 1));
  for (int k = 0; k < t->exclude.n; k++) ex[k] = t->exclude.v[k].glob;
  return (gr_load_opts){t->n_rename, t->rename_from, t->rename_to, t->exclude.n, ex};
}

bool gr_build_plan(const char *plan, gr_diag *d, const gr_compile_opts *o, gr_plan_build *b) {
  memset(b, 0, sizeof *b);
  gr_compile_opts first = o ? *o : (gr_compile_opts){0};
  first.phase = 0;
  if (!gr_compile_plan(plan, d, &first, &b->c[0])) {
    gr_compiled_free(&b->c[0]);
    return false;
  }
  b->n = 1;
  const gr_plan *p = &b->c[0].plan;
  if (p->pixels.random_crop || p->pixels.flip) /* the API takes samples, not image files */
    gr_warning(d, p->data_loc, "the C API trains on the samples it is given: the plan's random_crop and flip are not applied (augment "
                               "the samples yourself), so its weights will differ from graft train's");
  return gr_build_phases(plan, d, &first, b);
}

bool gr_build_phases(const char *plan, gr_diag *d, const gr_compile_opts *o, gr_plan_build *b) {
  GR_ASSERT(b->n == 1);
  const gr_plan *p = &b->c[0].plan;
  int n_ph = p->tl.n_phases > 0 ? p->tl.n_phases : 1;
  bool mute = d->mute_warnings;
  d->mute_warnings = true; /* the later phases repeat the first one's warnings */
  for (int k = 1; k < n_ph; k++) {
    gr_compile_opts again = o ? *o : (gr_compile_opts){0};
    again.phase = k;
    if (!gr_compile_plan(plan, d, &again, &b->c[k])) {
      gr_compiled_free(&b->c[k]);
      d->mute_warnings = mute;
      gr_plan_build_free(b);
      return false;
    }
    b->n++;
  }
  d->mute_warnings = mute;
  gr_run *r = &b->run;
  r->n_phases = n_ph;
  r->seed = p->seed;
  r->shuffle = p->shuffle;
  r->lr = p->opt.lr;
  r->schedule = p->schedule;
  for (int k = 0; k < n_ph; k++)
    r->phases[k] = (gr_train_phase){&b->c[k].rt, p->tl.n_phases ? p->tl.phases[k].epochs : p->epochs, p->tl.n_phases ? p->tl.phases[k].lr_mult : 1.0};
  return true;
}

void gr_plan_build_free(gr_plan_build *b) {
  for (int k = 0; k < b->n; k++) gr_compiled_free(&b->c[k]);
  b->n = 0;
}

bool gr_plan_init_weights(gr_plan_build *b, gr_session *s, gr_diag *d) {
  gr_compiled *c = &b->c[0];
  if (!c->plan.init_path) return true;
  gr_load_opts lo = gr_plan_load_opts(c);
  if (gr_session_load(s, c->plan.init_path, &lo, NULL, d)) return true;
  gr_note(d, c->plan.init_loc, "in the weights named here");
  return false;
}

static void free_build(void *b) {
  gr_plan_build_free(b);
  free(b);
}

graft_status graft_open_plan(const char *plan_path, const graft_options *opts, graft_model **out) {
  if (!out) return GRAFT_ERR_ARGUMENT;
  graft_model *m = *out = gr_api_new(opts);
  if (!m) return GRAFT_ERR_MEMORY;
  gr_diag *d = gr_api_diag(m);
  graft_status st = GRAFT_OK;
  gr_plan_build *b = calloc(1, sizeof *b);
  gr_compile_opts o = {.cg = {.cache_dir = opts ? opts->cache_dir : NULL, .no_cache = opts && opts->no_cache}};
  if (!plan_path) {
    gr_error(d, (gr_loc){0}, "graft_open_plan: a NULL plan path");
    st = GRAFT_ERR_ARGUMENT;
  } else if (!b) {
    st = GRAFT_ERR_MEMORY;
  } else if (!gr_build_plan(plan_path, d, &o, b)) {
    st = GRAFT_ERR_INPUT;
  }
  if (st) {
    free(b);
  } else {
    st = gr_api_start(m, &b->run, b, free_build, NULL, 0);
    if (!st && !gr_plan_init_weights(b, gr_api_session(m), d)) st = GRAFT_ERR_INPUT;
  }
  return gr_api_opened(m, st, out);
}
