/* weights.c — parameters in and out of safetensors files, by PyTorch state_dict name.
 *
 * Loading is strict: every parameter of the model must be in the file, with dtype F32 (buffers such
 * as num_batches_tracked may also be I64) and the same shape, and the file must hold nothing else; all problems are reported (missing, unexpected,
 * mismatched names), then the load fails and the session's parameters are untouched. Saving writes
 * every parameter as F32, atomically (see safetensors.c). */
#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include <stdlib.h>
#include <string.h>

static char *shape_text(char *buf, size_t n, int rank, const int64_t *dims) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < rank && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)dims[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

bool gr_session_load(gr_session *s, const char *path, gr_diag *d) {
  const gr_rt_model *m = gr_session_model(s);
  gr_st_file f;
  if (gr_st_open(path, &f, d) != 0) return false;
  int errors0 = d->n_errors;
  gr_loc at = gr_loc_file(path);
  char a[128], b[128];
  bool *used = calloc((size_t)f.n + 1, 1);
  GR_CHECK(used != NULL, "out of memory");
  for (int i = 0; i < m->n_params; i++) {
    const gr_rt_param *p = &m->params[i];
    const gr_st_tensor *t = gr_st_find(&f, p->name);
    if (!t) {
      gr_error(d, at, "missing tensor '%s' (shape %s) of the model", p->name, shape_text(a, sizeof a, p->shape.rank, p->shape.dim));
      continue;
    }
    used[t - f.tensors] = true;
    bool same = t->rank == p->shape.rank;
    for (int k = 0; same && k < t->rank; k++) same = t->shape[k] == p->shape.dim[k];
    if (!same)
      gr_error(d, at, "tensor '%s' has shape %s, the model's parameter has %s", p->name, shape_text(a, sizeof a, t->rank, t->shape),
               shape_text(b, sizeof b, p->shape.rank, p->shape.dim));
    else if (t->dtype != GR_ST_F32 && !(t->dtype == GR_ST_I64 && !p->trainable))
      gr_error(d, at, "tensor '%s' is %s; graft loads F32 weights (convert with tensor.float())", p->name, t->dtype_name);
  }
  for (int i = 0; i < f.n; i++)
    if (!used[i]) gr_error(d, at, "unexpected tensor '%s': the model has no parameter of that name", f.tensors[i].name);
  bool ok = d->n_errors == errors0;
  for (int i = 0; ok && i < m->n_params; i++) {
    const gr_st_tensor *t = gr_st_find(&f, m->params[i].name);
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
