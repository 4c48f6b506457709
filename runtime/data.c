/* data.c — data sets in memory. The whole set is decoded once (samples normalised as the plan says,
 * indices and labels range-checked) so that a training step only gathers rows; every inconsistency
 * between the files, or between the files and the model, is an error naming the file. */
#include "runtime/idx.h"
#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include <stdlib.h>
#include <string.h>

/* Room for n rows of per 4-byte values (x and y both hold 4-byte floats or int32s). */
static void *rows_alloc(int64_t n, int64_t per) { return malloc(4 * (size_t)(n * per) + 1); }

static bool alloc_sets(gr_dataset *ds, int64_t n, int64_t per, int64_t tper) {
  ds->n = n;
  ds->sample_numel = per;
  ds->target_numel = tper;
  ds->x = rows_alloc(n, per);
  ds->y = rows_alloc(n, tper);
  return ds->x && ds->y;
}

/* The values of one model: per-sample target count (1 for a class label). */
static int64_t target_numel(const gr_rt_model *m) { return m->target_numel ? m->target_numel : 1; }

bool gr_dataset_load_idx(gr_dataset *ds, const char *images, const char *labels, const gr_pixels *px, const gr_rt_model *m,
                         gr_diag *d) {
  double mean = px->mean[0], std = px->std[0];
  memset(ds, 0, sizeof *ds);
  if (m->in_dtype != GR_F32) {
    gr_error(d, gr_loc_file(images), "the model's input is integer indices, but IDX files hold pixel images; use 'format: tensors'");
    return false;
  }
  if (labels && m->target_numel > 1) {
    gr_error(d, gr_loc_file(labels), "the loss needs %lld target values per sample, but an IDX label file has one; use 'format: tensors'",
             (long long)m->target_numel);
    return false;
  }
  gr_idx im, lb = {0};
  if (gr_idx_read(images, &im, d) != 0) return false;
  if (!labels) { /* inputs only (graft predict): zero targets */
    lb.ndim = 1;
    lb.dims[0] = im.dims[0];
    lb.data = calloc((size_t)im.dims[0] + 1, 1);
    GR_CHECK(lb.data != NULL, "out of memory");
  } else if (gr_idx_read(labels, &lb, d) != 0) {
    gr_idx_free(&im);
    return false;
  }
  bool ok = false;
  int64_t per = 1;
  for (int i = 1; i < im.ndim; i++) per *= im.dims[i];
  if (lb.ndim != 1) {
    gr_error(d, gr_loc_file(labels), "a label file must have 1 dimension, this one has %d (is it an image file?)", lb.ndim);
  } else if (lb.dims[0] != im.dims[0]) {
    gr_error(d, gr_loc_file(labels), "has %lld labels but %s has %lld images", (long long)lb.dims[0], images, (long long)im.dims[0]);
  } else if (per != m->sample_numel) {
    gr_error(d, gr_loc_file(images), "each image has %lld values but the model input takes %lld per sample",
             (long long)per, (long long)m->sample_numel);
  } else {
    ok = true;
    for (int64_t i = 0; i < lb.dims[0] && !m->target_numel; i++) {
      if (lb.data[i] >= m->n_classes) {
        gr_error(d, gr_loc_file(labels), "label %d at offset %lld is out of range: the model has %lld classes",
                 lb.data[i], (long long)(8 + i), (long long)m->n_classes);
        ok = false;
        break;
      }
    }
  }
  if (ok && !alloc_sets(ds, im.dims[0], per, labels ? 1 : target_numel(m))) {
    gr_error(d, gr_loc_file(images), "out of memory for %lld samples", (long long)im.dims[0]);
    gr_dataset_free(ds);
    ok = false;
  } else if (ok) {
    float scale = (float)(1.0 / (255.0 * std)), shift = (float)(mean / std), *x = ds->x;
    for (int64_t i = 0; i < ds->n * per; i++) x[i] = (float)im.data[i] * scale - shift;
    if (!labels) memset(ds->y, 0, 4 * (size_t)(ds->n * ds->target_numel));
    for (int64_t i = 0; labels && i < ds->n; i++) {
      if (m->target_numel)
        ((float *)ds->y)[i] = lb.data[i];
      else
        ((int32_t *)ds->y)[i] = lb.data[i];
    }
    ds->images_path = images;
    ds->labels_path = labels;
  }
  gr_idx_free(&im);
  gr_idx_free(&lb);
  return ok;
}

static bool is_integer(const gr_st_tensor *t) { return t->dtype == GR_ST_I64 || t->dtype == GR_ST_I32 || t->dtype == GR_ST_U8; }

static int64_t integer_at(const gr_st_tensor *t, int64_t i) {
  if (t->dtype == GR_ST_I64) {
    int64_t v;
    memcpy(&v, t->data + 8 * i, 8);
    return v;
  }
  if (t->dtype == GR_ST_I32) {
    int32_t v;
    memcpy(&v, t->data + 4 * i, 4);
    return v;
  }
  return t->data[i];
}

/* Copies the n integers of t into out (int32, or float if as_float), each checked to be in
 * [0, limit) when limit > 0; the error reads "<what> y[i] = v is out of range: <has> <limit> <unit>". */
static bool copy_integers(const gr_st_tensor *t, int64_t n, void *out, bool as_float, int64_t limit, const char *what, const char *has,
                          const char *unit, gr_loc at, gr_diag *d) {
  for (int64_t i = 0; i < n; i++) {
    int64_t v = integer_at(t, i);
    if (limit > 0 && (v < 0 || v >= limit)) {
      gr_error(d, at, "%s %s[%lld] = %lld is out of range: %s %lld %s", what, t->name, (long long)i, (long long)v, has, (long long)limit, unit);
      return false;
    }
    if (as_float)
      ((float *)out)[i] = (float)v;
    else
      ((int32_t *)out)[i] = (int32_t)v;
  }
  return true;
}

/* x and y (or, without need_y, x alone: zero targets) */
static bool load_tensors(gr_dataset *ds, const char *path, const gr_rt_model *m, bool need_y, gr_diag *d) {
  memset(ds, 0, sizeof *ds);
  gr_st_file f;
  if (gr_st_open(path, &f, d) != 0) return false;
  gr_loc at = gr_loc_file(path);
  const gr_st_tensor *x = gr_st_find(&f, "x"), *y = need_y ? gr_st_find(&f, "y") : NULL;
  gr_st_tensor none = {.name = "y", .dtype = GR_ST_F32, .rank = 1};
  if (!need_y && x) { /* stands for zero targets */
    none.shape[0] = x->shape[0];
    y = &none;
  }
  bool ok = false, int_in = m->in_dtype == GR_I32;
  int64_t per = 1, tper = 1;
  if (x)
    for (int i = 1; i < x->rank; i++) per *= x->shape[i];
  if (y)
    for (int i = 1; i < y->rank; i++) tper *= y->shape[i];
  if (!x || !y) {
    gr_error(d, at, "a tensors data file needs tensors 'x' (samples) and 'y' (targets); '%s' is missing", x ? "y" : "x");
  } else if (x->rank < 1 || (int_in ? !is_integer(x) : x->dtype != GR_ST_F32)) {
    gr_error(d, at, "tensor 'x' must be %s [n, ...], it is %s of rank %d",
             int_in ? "integer indices (I64, I32 or U8), as the model's input is," : "F32", x->dtype_name, x->rank);
  } else if (y != &none && !m->target_numel && (y->rank != 1 || !is_integer(y))) {
    gr_error(d, at, "tensor 'y' must be integer class labels (I64, I32 or U8) of shape [n], it is %s of rank %d", y->dtype_name, y->rank);
  } else if (y != &none && m->target_numel && !(y->rank >= 1 && y->dtype == GR_ST_F32 && tper == m->target_numel) &&
             !(m->target_numel == 1 && y->rank == 1 && is_integer(y))) {
    gr_error(d, at, "tensor 'y' must be F32 targets with %lld values per sample (the model's output), it is %s of rank %d with %lld",
             (long long)m->target_numel, y->dtype_name, y->rank, (long long)tper);
  } else if (y->shape[0] != x->shape[0]) {
    gr_error(d, at, "tensor 'y' has %lld targets but 'x' has %lld samples", (long long)y->shape[0], (long long)x->shape[0]);
  } else if (per != m->sample_numel) {
    gr_error(d, at, "each sample of 'x' has %lld values but the model input takes %lld", (long long)per, (long long)m->sample_numel);
  } else if (x->shape[0] == 0) {
    gr_error(d, at, "tensor 'x' has no samples");
  } else {
    GR_CHECK(alloc_sets(ds, x->shape[0], per, target_numel(m)), "out of memory");
    ok = int_in ? copy_integers(x, ds->n * per, ds->x, false, m->in_limit, "index", "the model's embedding tables have", "rows", at, d)
                : (memcpy(ds->x, x->data, (size_t)x->nbytes), true);
    if (ok && y == &none)
      memset(ds->y, 0, 4 * (size_t)(ds->n * ds->target_numel));
    else if (ok && y->dtype == GR_ST_F32)
      memcpy(ds->y, y->data, (size_t)y->nbytes);
    else if (ok)
      ok = copy_integers(y, ds->n, ds->y, m->target_numel != 0, m->target_numel ? 0 : m->n_classes, "label", "the model has", "classes", at, d);
    ds->images_path = ds->labels_path = path;
  }
  gr_st_close(&f);
  if (!ok) gr_dataset_free(ds);
  return ok;
}

bool gr_dataset_load_tensors(gr_dataset *ds, const char *path, const gr_rt_model *m, gr_diag *d) {
  return load_tensors(ds, path, m, true, d);
}

bool gr_dataset_load_inputs(gr_dataset *ds, int format, const char *path, const gr_pixels *px, const gr_rt_model *m, gr_diag *d) {
  if (format == GR_FORMAT_IMAGES) return gr_dataset_load_image_files(ds, &path, 1, px, m, d);
  return format == GR_FORMAT_TENSORS ? load_tensors(ds, path, m, false, d) : gr_dataset_load_idx(ds, path, NULL, px, m, d);
}

/* Keeps the selected samples (in place, in order) and renumbers their labels. Without a class list,
 * every class is kept (per_class alone). */
static bool select_rows(gr_dataset *ds, const gr_rt_model *m, const gr_data_select *sel, const char *path, gr_diag *d) {
  int32_t *y = ds->y;
  int64_t nk = sel->n_classes ? sel->n_classes : m->n_classes;
  int64_t *count = calloc((size_t)nk + 1, sizeof *count), kept = 0;
  int64_t *keep = ds->img ? malloc(sizeof(int64_t) * (size_t)(ds->n + 1)) : NULL; /* image files: which stay */
  GR_CHECK(count != NULL && (keep || !ds->img), "out of memory");
  size_t row = 4 * (size_t)ds->sample_numel;
  for (int64_t i = 0; i < ds->n; i++) {
    int64_t k = 0;
    if (sel->n_classes)
      while (k < nk && sel->classes[k] != y[i]) k++;
    else
      k = y[i]; /* already checked to be below the model's classes */
    if (k == nk || (sel->per_class && count[k] >= sel->per_class)) continue;
    count[k]++;
    if (keep)
      keep[kept] = i;
    else
      memmove((uint8_t *)ds->x + (size_t)kept * row, (uint8_t *)ds->x + (size_t)i * row, row);
    y[kept++] = (int32_t)k;
  }
  if (keep) gr_dataset_keep_images(ds, keep, kept);
  free(keep);
  free(count);
  ds->n = kept;
  if (kept) return true;
  gr_error(d, gr_loc_file(path), "no sample has one of the plan's %lld selected classes", (long long)nk);
  return false;
}

bool gr_dataset_load(gr_dataset *ds, int format, const char *images, const char *labels, const gr_pixels *px,
                     const gr_rt_model *m, const gr_data_select *sel, gr_diag *d) {
  bool subset = sel && (sel->n_classes > 0 || sel->per_class > 0);
  gr_rt_model all = *m;
  if (sel && sel->n_classes > 0) all.n_classes = INT32_MAX; /* labels are checked against the selection instead */
  bool ok = format == GR_FORMAT_TENSORS ? gr_dataset_load_tensors(ds, images, &all, d)
            : format == GR_FORMAT_IMAGES ? gr_dataset_load_images(ds, images, px, &all, d)
                                         : gr_dataset_load_idx(ds, images, labels, px, &all, d);
  if (ok && subset) {
    GR_CHECK(!m->target_numel, "class selection needs class labels");
    ok = select_rows(ds, m, sel, format == GR_FORMAT_IDX ? labels : images, d);
    if (!ok) gr_dataset_free(ds);
  }
  return ok;
}

bool gr_dataset_samples(const gr_dataset *ds, const int64_t *idx, int64_t n, bool augment, uint64_t seed, void *x, gr_diag *d) {
  if (ds->img) return gr_dataset_images_batch(ds, idx, n, augment, seed, x, d);
  size_t row = 4 * (size_t)ds->sample_numel;
  for (int64_t i = 0; i < n; i++) memcpy((uint8_t *)x + (size_t)i * row, (const uint8_t *)ds->x + (size_t)idx[i] * row, row);
  return true;
}

void gr_dataset_free(gr_dataset *ds) {
  gr_images_free(ds->img);
  free(ds->x);
  free(ds->y);
  memset(ds, 0, sizeof *ds);
}
