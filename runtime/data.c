/* data.c — labelled data sets in memory. The whole set is decoded once into floats (normalised as
 * the plan says) so that a training step only gathers rows; every inconsistency between the files,
 * or between the files and the model, is an error naming the file. */
#include "runtime/idx.h"
#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include <stdlib.h>
#include <string.h>

bool gr_dataset_load_idx(gr_dataset *ds, const char *images, const char *labels, double mean, double std,
                         int64_t sample_numel, int64_t n_classes, gr_diag *d) {
  memset(ds, 0, sizeof *ds);
  gr_idx im, lb;
  if (gr_idx_read(images, &im, d) != 0) return false;
  if (gr_idx_read(labels, &lb, d) != 0) {
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
  } else if (per != sample_numel) {
    gr_error(d, gr_loc_file(images), "each image has %lld values but the model input takes %lld per sample",
             (long long)per, (long long)sample_numel);
  } else {
    ok = true;
    for (int64_t i = 0; i < lb.dims[0]; i++) {
      if (lb.data[i] >= n_classes) {
        gr_error(d, gr_loc_file(labels), "label %d at offset %lld is out of range: the model has %lld classes",
                 lb.data[i], (long long)(8 + i), (long long)n_classes);
        ok = false;
        break;
      }
    }
  }
  if (ok) {
    ds->n = im.dims[0];
    ds->sample_numel = per;
    ds->x = malloc(sizeof(float) * (size_t)(ds->n * per));
    ds->y = malloc(sizeof(int32_t) * (size_t)ds->n);
    if (!ds->x || !ds->y) {
      gr_error(d, gr_loc_file(images), "out of memory for %lld samples", (long long)ds->n);
      gr_dataset_free(ds);
      ok = false;
    } else {
      float scale = (float)(1.0 / (255.0 * std)), shift = (float)(mean / std);
      for (int64_t i = 0; i < ds->n * per; i++) ds->x[i] = (float)im.data[i] * scale - shift;
      for (int64_t i = 0; i < ds->n; i++) ds->y[i] = lb.data[i];
      ds->images_path = images;
      ds->labels_path = labels;
    }
  }
  gr_idx_free(&im);
  gr_idx_free(&lb);
  return ok;
}

bool gr_dataset_load_tensors(gr_dataset *ds, const char *path, int64_t sample_numel, int64_t n_classes, gr_diag *d) {
  memset(ds, 0, sizeof *ds);
  gr_st_file f;
  if (gr_st_open(path, &f, d) != 0) return false;
  gr_loc at = gr_loc_file(path);
  const gr_st_tensor *x = gr_st_find(&f, "x"), *y = gr_st_find(&f, "y");
  bool ok = false;
  int64_t per = 1;
  if (x)
    for (int i = 1; i < x->rank; i++) per *= x->shape[i];
  if (!x || !y) {
    gr_error(d, at, "a tensors data file needs tensors 'x' (samples) and 'y' (labels); '%s' is missing", x ? "y" : "x");
  } else if (x->dtype != GR_ST_F32 || x->rank < 1) {
    gr_error(d, at, "tensor 'x' must be F32 [n, ...], it is %s of rank %d", x->dtype_name, x->rank);
  } else if (y->rank != 1 || (y->dtype != GR_ST_I64 && y->dtype != GR_ST_I32 && y->dtype != GR_ST_U8)) {
    gr_error(d, at, "tensor 'y' must be integer labels (I64, I32 or U8) of shape [n], it is %s of rank %d", y->dtype_name, y->rank);
  } else if (y->shape[0] != x->shape[0]) {
    gr_error(d, at, "tensor 'y' has %lld labels but 'x' has %lld samples", (long long)y->shape[0], (long long)x->shape[0]);
  } else if (per != sample_numel) {
    gr_error(d, at, "each sample of 'x' has %lld values but the model input takes %lld", (long long)per, (long long)sample_numel);
  } else if (x->shape[0] == 0) {
    gr_error(d, at, "tensor 'x' has no samples");
  } else {
    ds->n = x->shape[0];
    ds->sample_numel = per;
    ds->x = malloc(sizeof(float) * (size_t)(ds->n * per) + 1);
    ds->y = malloc(sizeof(int32_t) * (size_t)ds->n + 1);
    GR_CHECK(ds->x && ds->y, "out of memory");
    memcpy(ds->x, x->data, (size_t)x->nbytes);
    ok = true;
    for (int64_t i = 0; i < ds->n && ok; i++) {
      int64_t v;
      if (y->dtype == GR_ST_I64) {
        memcpy(&v, y->data + 8 * i, 8);
      } else if (y->dtype == GR_ST_I32) {
        int32_t w;
        memcpy(&w, y->data + 4 * i, 4);
        v = w;
      } else {
        v = y->data[i];
      }
      if (v < 0 || v >= n_classes) {
        gr_error(d, at, "label y[%lld] = %lld is out of range: the model has %lld classes", (long long)i, (long long)v, (long long)n_classes);
        ok = false;
      }
      ds->y[i] = (int32_t)v;
    }
    ds->images_path = ds->labels_path = path;
  }
  gr_st_close(&f);
  if (!ok) gr_dataset_free(ds);
  return ok;
}

bool gr_dataset_load(gr_dataset *ds, int format, const char *images, const char *labels, double mean, double std,
                     int64_t sample_numel, int64_t n_classes, gr_diag *d) {
  if (format == 1) return gr_dataset_load_tensors(ds, images, sample_numel, n_classes, d);
  return gr_dataset_load_idx(ds, images, labels, mean, std, sample_numel, n_classes, d);
}

void gr_dataset_free(gr_dataset *ds) {
  free(ds->x);
  free(ds->y);
  memset(ds, 0, sizeof *ds);
}
