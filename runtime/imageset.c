/* imageset.c — image-folder data sets: one sub-folder per class (classes numbered in the sorted order
 * of the folder names, as torchvision's ImageFolder does), PNG and JPEG files in each. Unlike the
 * other formats, images are not decoded once at load: a batch is decoded, resized, cropped, flipped
 * and normalised when it is needed, by a worker thread that prepares the next batch while the
 * current step runs. A training image's random crop and flip come from the run's seed, the epoch and
 * its place in the batch, so the run is reproducible whichever thread does the work. */
#include "runtime/image.h"
#include "runtime/runtime.h"
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { REQ_IDLE, REQ_PENDING, REQ_DONE };

struct gr_images {
  int64_t n;
  char **paths;       /* n files */
  int n_classes;
  char **class_names; /* sorted; NULL for loose files (graft predict) */
  gr_pixels px;
  int c, h, w; /* the model's input */
  /* the worker and its one request: the next batch */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool started, stop;
  int state;
  int64_t *req_idx, req_n, req_cap;
  bool req_augment;
  uint64_t req_seed;
  float *buf;
  bool req_ok;
  int64_t req_bad; /* the sample that failed */
  char req_err[512];
};

static int64_t per_sample(const gr_images *im) { return (int64_t)im->c * im->h * im->w; }

static bool has_image_ext(const char *name) {
  const char *dot = strrchr(name, '.');
  return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *join(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *s = malloc(la + lb + 2);
  GR_CHECK(s != NULL, "out of memory");
  memcpy(s, a, la);
  s[la] = '/';
  memcpy(s + la + 1, b, lb + 1);
  return s;
}

/* The sorted entries of dir that are directories (dirs) or image files (!dirs); NULL after
 * reporting if dir cannot be read. */
char **gr_list_dir(const char *dir, bool (*keep)(const char *name, bool is_dir, const void *user), const void *user, int64_t *count) {
  DIR *dp = opendir(dir);
  if (!dp) return NULL;
  int64_t n = 0, cap = 16;
  char **v = malloc(sizeof(char *) * (size_t)cap);
  GR_CHECK(v != NULL, "out of memory");
  struct dirent *e;
  while ((e = readdir(dp))) {
    if (e->d_name[0] == '.') continue; /* ., .. and hidden files */
    char *full = join(dir, e->d_name);
    struct stat st;
    bool is_dir = stat(full, &st) == 0 && S_ISDIR(st.st_mode);
    free(full);
    if (!keep(e->d_name, is_dir, user)) continue;
    if (n == cap) {
      cap *= 2;
      v = realloc(v, sizeof(char *) * (size_t)cap);
      GR_CHECK(v != NULL, "out of memory");
    }
    v[n] = strdup(e->d_name);
    GR_CHECK(v[n] != NULL, "out of memory");
    n++;
  }
  closedir(dp);
  qsort(v, (size_t)n, sizeof *v, by_name);
  *count = n;
  return v;
}

/* sub-folders (user non-NULL) or image files (NULL) */
static bool image_entry(const char *name, bool is_dir, const void *dirs) { return dirs ? is_dir : !is_dir && has_image_ext(name); }

/* The sorted sub-folders (dirs) or image files (!dirs) of an image folder; NULL after reporting. */
static char **list_dir(const char *dir, bool dirs, int64_t *count, gr_diag *d) {
  char **v = gr_list_dir(dir, image_entry, dirs ? dir : NULL, count);
  if (!v) gr_error(d, gr_loc_file(dir), "cannot read the image folder: %s", strerror(errno));
  return v;
}

static void free_list(char **v, int64_t n) {
  for (int64_t i = 0; v && i < n; i++) free(v[i]);
  free(v);
}

static gr_images *new_images(const gr_pixels *px, const gr_rt_model *m) {
  gr_images *im = calloc(1, sizeof *im);
  GR_CHECK(im != NULL, "out of memory");
  im->px = *px;
  im->c = (int)m->in_shape.dim[1];
  im->h = (int)m->in_shape.dim[2];
  im->w = (int)m->in_shape.dim[3];
  pthread_mutex_init(&im->mu, NULL);
  pthread_cond_init(&im->cv, NULL);
  return im;
}

static bool image_input_ok(const gr_rt_model *m, const char *path, gr_diag *d) {
  if (m->in_dtype == GR_F32 && m->in_shape.rank == 4 && (m->in_shape.dim[1] == 1 || m->in_shape.dim[1] == 3)) return true;
  gr_error(d, gr_loc_file(path), "image data needs a model input of shape [N, C, H, W] with C = 1 (grey) or 3 (RGB)");
  return false;
}

char **gr_image_classes(const char *dir, int64_t *n, gr_diag *d) {
  char **classes = list_dir(dir, true, n, d);
  if (classes && *n == 0) {
    gr_error(d, gr_loc_file(dir), "has no class sub-folders; an image folder holds one sub-folder of images per class");
    free(classes);
    classes = NULL;
  }
  return classes;
}

void gr_image_classes_free(char **names, int64_t n) { free_list(names, n); }

bool gr_dataset_load_images(gr_dataset *ds, const char *dir, const gr_pixels *px, const gr_rt_model *m, gr_diag *d) {
  memset(ds, 0, sizeof *ds);
  if (!image_input_ok(m, dir, d)) return false;
  int64_t nc = 0;
  char **classes = gr_image_classes(dir, &nc, d);
  if (!classes) return false;
  if (nc > m->n_classes) {
    gr_error(d, gr_loc_file(dir), "has %lld class sub-folders but the model has %lld classes", (long long)nc, (long long)m->n_classes);
    free_list(classes, nc);
    return false;
  }
  gr_images *im = new_images(px, m);
  im->n_classes = (int)nc;
  im->class_names = classes;
  int64_t cap = 0;
  int32_t *labels = NULL;
  for (int64_t k = 0; k < nc; k++) {
    char *sub = join(dir, classes[k]);
    int64_t nf = 0;
    char **files = list_dir(sub, false, &nf, d);
    if (files && nf == 0) gr_error(d, gr_loc_file(sub), "class folder '%s' has no PNG or JPEG files", classes[k]);
    if (!files || nf == 0) {
      free(sub);
      free_list(files, nf);
      free(labels);
      ds->img = im;
      gr_dataset_free(ds);
      return false;
    }
    if (im->n + nf > cap) {
      cap = (im->n + nf) * 2;
      im->paths = realloc(im->paths, sizeof(char *) * (size_t)cap);
      labels = realloc(labels, sizeof(int32_t) * (size_t)cap);
      GR_CHECK(im->paths && labels, "out of memory");
    }
    for (int64_t i = 0; i < nf; i++) {
      im->paths[im->n] = join(sub, files[i]);
      labels[im->n++] = (int32_t)k;
    }
    free(sub);
    free_list(files, nf);
  }
  ds->img = im;
  ds->n = im->n;
  ds->sample_numel = per_sample(im);
  ds->target_numel = 1;
  ds->y = labels;
  ds->images_path = ds->labels_path = dir;
  return true;
}

typedef struct path_list {
  char **v;
  int64_t n, cap;
} path_list;

static void push_path(path_list *l, char *path) {
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 16;
    l->v = realloc(l->v, sizeof(char *) * (size_t)l->cap);
    GR_CHECK(l->v != NULL, "out of memory");
  }
  l->v[l->n++] = path;
}

/* A file as it is; a folder's image files and then its sub-folders', each in sorted order. */
static bool collect(const char *path, path_list *l, int depth, gr_diag *d) {
  struct stat st;
  if (stat(path, &st) != 0) {
    gr_error(d, gr_loc_file(path), "cannot open: %s", strerror(errno));
    return false;
  }
  if (!S_ISDIR(st.st_mode)) {
    push_path(l, strdup(path));
    GR_CHECK(l->v[l->n - 1] != NULL, "out of memory");
    return true;
  }
  if (depth > 8) return true;
  int64_t nf = 0, nd = 0;
  char **files = list_dir(path, false, &nf, d), **dirs = files ? list_dir(path, true, &nd, d) : NULL;
  bool ok = files && dirs;
  for (int64_t i = 0; ok && i < nf; i++) push_path(l, join(path, files[i]));
  for (int64_t i = 0; ok && i < nd; i++) {
    char *sub = join(path, dirs[i]);
    ok = collect(sub, l, depth + 1, d);
    free(sub);
  }
  free_list(files, nf);
  free_list(dirs, nd);
  return ok;
}

bool gr_dataset_load_image_files(gr_dataset *ds, const char *const *paths, int64_t n, const gr_pixels *px, const gr_rt_model *m,
                                 gr_diag *d) {
  memset(ds, 0, sizeof *ds);
  if (!image_input_ok(m, n ? paths[0] : "input", d)) return false;
  path_list l = {0};
  for (int64_t i = 0; i < n; i++)
    if (!collect(paths[i], &l, 0, d)) {
      free_list(l.v, l.n);
      return false;
    }
  if (l.n == 0) {
    gr_error(d, gr_loc_file(paths[0]), "has no PNG or JPEG files");
    free(l.v);
    return false;
  }
  gr_images *im = new_images(px, m);
  im->paths = l.v;
  im->n = l.n;
  ds->img = im;
  ds->n = l.n;
  ds->sample_numel = per_sample(im);
  ds->target_numel = m->target_numel ? m->target_numel : 1;
  ds->y = calloc((size_t)ds->n + 1, 4 * (size_t)ds->target_numel);
  GR_CHECK(ds->y != NULL, "out of memory");
  return true;
}

int gr_dataset_class_count(const gr_dataset *ds) { return ds->img ? ds->img->n_classes : 0; }
const char *gr_dataset_class_name(const gr_dataset *ds, int k) {
  return ds->img && ds->img->class_names && k >= 0 && k < ds->img->n_classes ? ds->img->class_names[k] : NULL;
}
const char *gr_dataset_sample_path(const gr_dataset *ds, int64_t i) { return ds->img && i >= 0 && i < ds->n ? ds->img->paths[i] : NULL; }

void gr_dataset_keep_images(gr_dataset *ds, const int64_t *keep, int64_t n) {
  gr_images *im = ds->img;
  char **paths = malloc(sizeof(char *) * (size_t)(n + 1));
  bool *kept = calloc((size_t)im->n + 1, 1);
  GR_CHECK(paths && kept, "out of memory");
  for (int64_t i = 0; i < n; i++) {
    paths[i] = im->paths[keep[i]];
    kept[keep[i]] = true;
  }
  for (int64_t i = 0; i < im->n; i++)
    if (!kept[i]) free(im->paths[i]);
  free(kept);
  free(im->paths);
  im->paths = paths;
  im->n = n;
}

/* Sample `i` as model input: decoded, resized, cropped (centred, or at random with augment), maybe
 * mirrored, normalised. rng: the sample's own. */
static bool decode_sample(gr_images *im, int64_t i, bool augment, uint64_t seed, float *out, char *err, size_t err_size) {
  gr_image raw, sized;
  if (!gr_image_read(im->paths[i], im->c, &raw, err, err_size)) return false;
  int rw, rh;
  gr_image_resized_size(&im->px, raw.w, raw.h, &rw, &rh);
  if ((int64_t)rw * rh > GR_IMAGE_MAX_PIXELS) {
    snprintf(err, err_size, "is %d x %d pixels; resizing it would make %d x %d, more than graft handles (64 Mpixels)", raw.w, raw.h, rw, rh);
    gr_image_free(&raw);
    return false;
  }
  if (rw < im->w || rh < im->h) {
    if (im->px.resize_h)
      snprintf(err, err_size, "is %d x %d after resizing (from %d x %d), smaller than the model input of %d x %d", rw, rh, raw.w, raw.h, im->w,
               im->h);
    else
      snprintf(err, err_size, "is %d x %d pixels, smaller than the model input of %d x %d; resize it with the plan's data 'resize'", raw.w,
               raw.h, im->w, im->h);
    gr_image_free(&raw);
    return false;
  }
  if (rw == raw.w && rh == raw.h) {
    sized = raw;
  } else {
    bool ok = gr_image_resize(&raw, rw, rh, &sized);
    gr_image_free(&raw);
    if (!ok) {
      snprintf(err, err_size, "out of memory");
      return false;
    }
  }
  int top, left;
  bool flip = false;
  if (augment && (im->px.random_crop || im->px.flip)) {
    gr_rng r;
    gr_rng_seed(&r, seed);
    top = im->px.random_crop ? (int)gr_rng_below(&r, (uint64_t)(rh - im->h + 1)) : (int)nearbyint((rh - im->h) / 2.0);
    left = im->px.random_crop ? (int)gr_rng_below(&r, (uint64_t)(rw - im->w + 1)) : (int)nearbyint((rw - im->w) / 2.0);
    flip = im->px.flip && (gr_rng_next(&r) >> 63);
  } else { /* torchvision's CenterCrop: round((size - crop) / 2), halves to even */
    top = (int)nearbyint((rh - im->h) / 2.0);
    left = (int)nearbyint((rw - im->w) / 2.0);
  }
  gr_image_to_input(&sized, top, left, im->h, im->w, flip, &im->px, out);
  gr_image_free(&sized);
  return true;
}

/* sample j of a batch gets seed + j (the generator mixes it) */
static bool decode_batch(gr_images *im, const int64_t *idx, int64_t n, bool augment, uint64_t seed, float *x, int64_t *bad, char *err,
                         size_t err_size) {
  int64_t per = per_sample(im);
  for (int64_t j = 0; j < n; j++)
    if (!decode_sample(im, idx[j], augment, seed + (uint64_t)j, x + j * per, err, err_size)) {
      *bad = idx[j];
      return false;
    }
  return true;
}

static void *worker(void *arg) {
  gr_images *im = arg;
  pthread_mutex_lock(&im->mu);
  for (;;) {
    while (!im->stop && im->state != REQ_PENDING) pthread_cond_wait(&im->cv, &im->mu);
    if (im->stop) break;
    pthread_mutex_unlock(&im->mu); /* the request is not touched by the main thread until it is done */
    bool ok = decode_batch(im, im->req_idx, im->req_n, im->req_augment, im->req_seed, im->buf, &im->req_bad, im->req_err, sizeof im->req_err);
    pthread_mutex_lock(&im->mu);
    im->req_ok = ok;
    im->state = REQ_DONE;
    pthread_cond_broadcast(&im->cv);
  }
  pthread_mutex_unlock(&im->mu);
  return NULL;
}

/* Waits for the worker's request, if any, to finish. Called with mu held. */
static void wait_done(gr_images *im) {
  while (im->state == REQ_PENDING) pthread_cond_wait(&im->cv, &im->mu);
}

void gr_dataset_prefetch(const gr_dataset *ds, const int64_t *idx, int64_t n, bool augment, uint64_t seed) {
  gr_images *im = ds->img;
  if (!im || n <= 0) return;
  pthread_mutex_lock(&im->mu);
  wait_done(im);
  if (!im->started) {
    im->started = pthread_create(&im->thread, NULL, worker, im) == 0;
    if (!im->started) { /* no thread: batches are decoded when asked for */
      pthread_mutex_unlock(&im->mu);
      return;
    }
  }
  if (n > im->req_cap) {
    free(im->req_idx);
    free(im->buf);
    im->req_idx = malloc(sizeof(int64_t) * (size_t)n);
    im->buf = malloc(sizeof(float) * (size_t)(n * per_sample(im)));
    GR_CHECK(im->req_idx && im->buf, "out of memory");
    im->req_cap = n;
  }
  memcpy(im->req_idx, idx, sizeof(int64_t) * (size_t)n);
  im->req_n = n;
  im->req_augment = augment;
  im->req_seed = seed;
  im->state = REQ_PENDING;
  pthread_cond_broadcast(&im->cv);
  pthread_mutex_unlock(&im->mu);
}

bool gr_dataset_images_batch(const gr_dataset *ds, const int64_t *idx, int64_t n, bool augment, uint64_t seed, float *x, gr_diag *d) {
  gr_images *im = ds->img;
  pthread_mutex_lock(&im->mu);
  wait_done(im);
  bool hit = im->state == REQ_DONE && im->req_n == n && im->req_augment == augment && im->req_seed == seed &&
             !memcmp(im->req_idx, idx, sizeof(int64_t) * (size_t)n);
  bool ok;
  int64_t bad = -1;
  char err[512];
  if (hit) {
    ok = im->req_ok;
    bad = im->req_bad;
    snprintf(err, sizeof err, "%s", im->req_err);
    if (ok) memcpy(x, im->buf, sizeof(float) * (size_t)(n * per_sample(im)));
  } else {
    ok = decode_batch(im, idx, n, augment, seed, x, &bad, err, sizeof err);
  }
  im->state = REQ_IDLE;
  pthread_mutex_unlock(&im->mu);
  if (!ok) gr_error(d, gr_loc_file(im->paths[bad]), "%s", err);
  return ok;
}

void gr_images_free(gr_images *im) {
  if (!im) return;
  if (im->started) {
    pthread_mutex_lock(&im->mu);
    im->stop = true;
    pthread_cond_broadcast(&im->cv);
    pthread_mutex_unlock(&im->mu);
    pthread_join(im->thread, NULL);
  }
  pthread_mutex_destroy(&im->mu);
  pthread_cond_destroy(&im->cv);
  free_list(im->paths, im->n);
  free_list(im->class_names, im->n_classes);
  free(im->req_idx);
  free(im->buf);
  free(im);
}
