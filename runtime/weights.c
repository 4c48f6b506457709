/* weights.c — parameters in and out of safetensors files, by PyTorch state_dict name.
 *
 * Loading is strict: every parameter of the model must be in the file, with dtype F32 (buffers such
 * as num_batches_tracked may also be I64) and the same shape, and the file must hold nothing else;
 * all problems are reported (missing, unexpected, mismatched names), then the load fails and the
 * session's parameters are untouched. Options (the plan's init mapping) rename the file's tensors by
 * prefix and exclude parameters by pattern: those keep their fresh initialisation, and file tensors
 * of those names are ignored (head surgery). Saving writes
 * every parameter as F32, atomically (see safetensors.c). */
#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *shape_text(char *buf, size_t n, int rank, const int64_t *dims) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < rank && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)dims[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

/* The model name a file tensor stands for: the first rename whose prefix it has, applied. */
static const char *renamed(const gr_load_opts *o, const char *name, char *buf, size_t n) {
  for (int k = 0; o && k < o->n_rename; k++) {
    size_t len = strlen(o->rename_from[k]);
    if (strncmp(name, o->rename_from[k], len) != 0) continue;
    snprintf(buf, n, "%s%s", o->rename_to[k], name + len);
    return buf;
  }
  return name;
}

static bool excluded(const gr_load_opts *o, const char *name) {
  for (int k = 0; o && k < o->n_exclude; k++)
    if (gr_glob_match(o->exclude[k], name)) return true;
  return false;
}

bool gr_session_load(gr_session *s, const char *path, const gr_load_opts *o, FILE *report, gr_diag *d) {
  const gr_rt_model *m = gr_session_model(s);
  gr_st_file f;
  if (gr_st_open(path, &f, d) != 0) return false;
  int errors0 = d->n_errors;
  gr_loc at = gr_loc_file(path);
  char a[128], b[128], nb[1024];
  /* the file's tensors under their model names; those excluded are ignored */
  const char **names = calloc((size_t)f.n + 1, sizeof *names);
  const gr_st_tensor **src = calloc((size_t)m->n_params + 1, sizeof *src);
  bool *used = calloc((size_t)f.n + 1, 1);
  GR_CHECK(names && src && used, "out of memory");
  for (int i = 0; i < f.n; i++) {
    const char *r = renamed(o, f.tensors[i].name, nb, sizeof nb);
    names[i] = r == nb ? strdup(nb) : r;
    GR_CHECK(names[i] != NULL, "out of memory");
    for (int j = 0; j < i; j++)
      if (!strcmp(names[i], names[j]))
        gr_error(d, at, "tensors '%s' and '%s' both stand for '%s' after renaming", f.tensors[j].name, f.tensors[i].name, names[i]);
  }
  int loaded = 0, fresh = 0;
  for (int i = 0; i < m->n_params; i++) {
    const gr_rt_param *p = &m->params[i];
    if (excluded(o, p->name)) {
      fresh++;
      continue;
    }
    const gr_st_tensor *t = NULL;
    for (int j = 0; j < f.n && !t; j++)
      if (!strcmp(names[j], p->name)) t = &f.tensors[j];
    if (!t) {
      gr_error(d, at, "missing tensor '%s' (shape %s) of the model", p->name, shape_text(a, sizeof a, p->shape.rank, p->shape.dim));
      continue;
    }
    used[t - f.tensors] = true;
    char from[600] = ""; /* where a renamed tensor came from */
    if (strcmp(t->name, p->name)) snprintf(from, sizeof from, " (renamed from '%s')", t->name);
    bool same = t->rank == p->shape.rank;
    for (int k = 0; same && k < t->rank; k++) same = t->shape[k] == p->shape.dim[k];
    if (!same)
      gr_error(d, at, "tensor '%s'%s has shape %s, the model's parameter has %s", p->name, from,
               shape_text(a, sizeof a, t->rank, t->shape), shape_text(b, sizeof b, p->shape.rank, p->shape.dim));
    else if (t->dtype != GR_ST_F32 && !(t->dtype == GR_ST_I64 && p->buffer))
      gr_error(d, at, "tensor '%s'%s is %s; graft loads F32 weights (convert with tensor.float())", p->name, from, t->dtype_name);
    src[i] = t;
    loaded++;
  }
  int ignored = 0;
  for (int i = 0; i < f.n; i++) {
    if (used[i]) continue;
    if (excluded(o, names[i]))
      ignored++;
    else
      gr_error(d, at, "unexpected tensor '%s': the model has no parameter of that name", names[i]);
  }
  bool ok = d->n_errors == errors0;
  if (!ok && (fresh || (o && o->n_exclude)))
    gr_note(d, at, "%d parameter%s of the model start fresh (init exclude)", fresh, fresh == 1 ? "" : "s");
  for (int i = 0; ok && i < m->n_params; i++) {
    const gr_st_tensor *t = src[i];
    if (!t) continue;
    float *dst = gr_session_param(s, i);
    if (t->dtype == GR_ST_F32) {
      memcpy(dst, t->data, sizeof(float) * (size_t)m->params[i].numel);
    } else { /* an integer buffer, such as PyTorch's num_batches_tracked */
      for (int64_t k = 0; k < m->params[i].numel; k++) {
        int64_t v;
        memcpy(&v, t->data + 8 * k, 8);
        dst[k] = (float)v;
      }
    }
  }
  if (ok && report) {
    fprintf(report, "init: %d tensors loaded from %s", loaded, path);
    if (fresh) fprintf(report, "; %d parameter%s start fresh", fresh, fresh == 1 ? "" : "s");
    if (ignored) fprintf(report, "; %d tensor%s of the file ignored", ignored, ignored == 1 ? "" : "s");
    fputs(fresh || ignored ? " (init exclude)\n" : "\n", report);
  }
  for (int i = 0; i < f.n; i++)
    if (names[i] != f.tensors[i].name) free((void *)names[i]);
  free(names);
  free(src);
  free(used);
  gr_st_close(&f);
  return ok;
}

bool gr_session_save(gr_session *s, const char *path, gr_diag *d) {
  const gr_rt_model *m = gr_session_model(s);
  gr_st_out *t = calloc((size_t)m->n_params + 1, sizeof *t);
  GR_CHECK(t != NULL, "out of memory");
  for (int i = 0; i < m->n_params; i++)
    t[i] = (gr_st_out){m->params[i].name, m->params[i].shape.rank, m->params[i].shape.dim, gr_session_param(s, i)};
  bool ok = gr_st_write(path, t, m->n_params, "{\"format\": \"pt\", \"producer\": \"graft\"}", d) == 0;
  free(t);
  return ok;
}
