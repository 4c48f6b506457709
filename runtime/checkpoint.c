/* checkpoint.c — checkpoints of a training run, and finding and reading them back to resume it.
 *
 * A checkpoint is a safetensors file, DIR/step-<step>.safetensors: every parameter and buffer under
 * its name (as --save writes them), then the optimizer state under its names
 * ("fc.weight.momentum_buffer", "fc.weight.exp_avg", ...), and metadata saying where the run is:
 * the phase, the epochs completed, the batches done in the current epoch, the optimizer steps, the
 * step at which each phase began, and what must not change between the run and its resumption (seed,
 * batch size, training-set size, phase count). Randomness needs no state of its own: the shuffling
 * and dropout generators are replayed from the seed to the same point (train.c). A CRC-32 of the
 * data section, in the metadata, is checked on reading, so a torn or altered file is never trusted.
 * Writing goes through gr_st_write (temporary file, fsync, rename, directory fsync): a crash or a
 * full disk leaves the previous checkpoint as it was. The `keep` newest checkpoints stay. */
#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum { CKPT_VERSION = 1 };

/* A value of the metadata's flat JSON object (written by this file: "key": "value" with no escapes). */
static bool meta_get(const char *json, const char *key, char *out, size_t size) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\"", key);
  const char *p = json ? strstr(json, pat) : NULL;
  if (!p) return false;
  p += strlen(pat);
  while (*p == ' ' || *p == ':') p++;
  if (*p++ != '"') return false;
  const char *e = strchr(p, '"');
  if (!e || (size_t)(e - p) >= size) return false;
  memcpy(out, p, (size_t)(e - p));
  out[e - p] = 0;
  return true;
}

static bool meta_int(const char *json, const char *key, int64_t *v) {
  char buf[32], *end;
  if (!meta_get(json, key, buf, sizeof buf)) return false;
  errno = 0;
  long long x = strtoll(buf, &end, 10);
  if (errno || *end || end == buf) return false;
  *v = x;
  return true;
}

static uLong crc_of(const gr_st_out *t, int n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (int i = 0; i < n; i++) {
    int64_t numel = 1;
    for (int k = 0; k < t[i].rank; k++) numel *= t[i].shape[k];
    crc = crc32(crc, (const Bytef *)t[i].data, (uInt)(4 * numel));
  }
  return crc;
}

static bool all_finite(const float *v, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(v[i])) return false;
  return true;
}

/* checkpoint files (step-*.safetensors), or (stale non-NULL) temporary files of interrupted writes */
static bool ckpt_entry(const char *name, bool is_dir, const void *stale) {
  size_t len = strlen(name);
  if (is_dir || strncmp(name, "step-", 5)) return false;
  return stale ? strstr(name, ".safetensors.tmp.") != NULL : len >= 17 && !strcmp(name + len - 12, ".safetensors");
}

/* The paths of dir's checkpoint files (or stale temporary files), newest (highest step) first. */
static char **list_checkpoints(const char *dir, bool stale, int *count) {
  int64_t n = 0;
  char **v = gr_list_dir(dir, ckpt_entry, stale ? dir : NULL, &n);
  for (int64_t i = 0; i < n / 2; i++) { /* zero-padded step numbers sort as numbers: reversed, newest first */
    char *t = v[i];
    v[i] = v[n - 1 - i];
    v[n - 1 - i] = t;
  }
  for (int64_t i = 0; i < n; i++) {
    size_t sz = strlen(dir) + strlen(v[i]) + 2;
    char *full = malloc(sz);
    GR_CHECK(full != NULL, "out of memory");
    snprintf(full, sz, "%s/%s", dir, v[i]);
    free(v[i]);
    v[i] = full;
  }
  *count = (int)n;
  return v;
}

/* The temporary files of checkpoint writes that a crash interrupted (step-*.safetensors.tmp.<pid>). */
static void remove_stale(const char *dir) {
  int count;
  char **files = list_checkpoints(dir, true, &count);
  for (int i = 0; i < count; i++) {
    unlink(files[i]);
    free(files[i]);
  }
  free(files);
}

bool gr_checkpoint_write(gr_session *s, const char *dir, const gr_ckpt_pos *pos, int keep, FILE *log, gr_diag *d) {
  const gr_rt_model *m = gr_session_model(s);
  int n = m->n_params + m->n_states;
  gr_st_out *t = calloc((size_t)n + 1, sizeof *t);
  GR_CHECK(t != NULL, "out of memory");
  for (int i = 0; i < m->n_params; i++) {
    const gr_rt_param *p = &m->params[i];
    t[i] = (gr_st_out){p->name, p->shape.rank, p->shape.dim, gr_session_param(s, i)};
    if (!all_finite(t[i].data, p->numel)) { /* never a poisoned checkpoint */
      gr_error(d, gr_loc_file(dir), "not writing a checkpoint at step %lld: parameter '%s' holds NaN or infinite values", (long long)pos->step,
               p->name);
      free(t);
      return false;
    }
  }
  for (int i = 0; i < m->n_states; i++) {
    const gr_rt_param *p = &m->states[i];
    t[m->n_params + i] = (gr_st_out){p->name, p->shape.rank, p->shape.dim, gr_session_state(s, i)};
  }
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    gr_error(d, gr_loc_file(dir), "cannot create the checkpoint directory: %s", strerror(errno));
    free(t);
    return false;
  }
  char starts[GR_MAX_PHASES * 21 + 1] = "", meta[2048], path[4096];
  for (int k = 0; k < pos->n_phases; k++)
    snprintf(starts + strlen(starts), sizeof starts - strlen(starts), "%s%lld", k ? "," : "", (long long)pos->phase_start[k]);
  snprintf(meta, sizeof meta,
           "{\"producer\": \"graft\", \"graft_checkpoint\": \"%d\", \"phase\": \"%d\", \"epoch\": \"%lld\", \"batch\": \"%lld\", "
           "\"step\": \"%lld\", \"phase_start\": \"%s\", \"phases\": \"%d\", \"seed\": \"%" PRIu64 "\", \"batch_size\": \"%lld\", "
           "\"samples\": \"%lld\", \"crc32\": \"%lu\"}",
           CKPT_VERSION, pos->phase, (long long)pos->epoch, (long long)pos->batch, (long long)pos->step, starts, pos->n_phases, pos->seed,
           (long long)pos->batch_size, (long long)pos->samples, (unsigned long)crc_of(t, n));
  snprintf(path, sizeof path, "%s/step-%09lld.safetensors", dir, (long long)pos->step);
  bool ok = gr_st_write(path, t, n, meta, d) == 0;
  free(t);
  if (!ok) return false;
  if (log)
    fprintf(log, "checkpoint: %s (%s epoch %lld, step %lld)\n", path, pos->batch > 0 ? "in" : "after", (long long)pos->epoch + (pos->batch > 0),
            (long long)pos->step);
  int count;
  char **files = list_checkpoints(dir, false, &count);
  for (int i = 0; i < count; i++) {
    if (i >= keep) unlink(files[i]); /* the oldest beyond `keep` */
    free(files[i]);
  }
  free(files);
  remove_stale(dir);
  return true;
}

/* Opens a checkpoint file and checks it whole: a graft checkpoint of this version, its position
 * complete, its checksum right. */
static bool open_checkpoint(const char *path, gr_st_file *f, gr_ckpt_pos *pos, gr_diag *d) {
  if (gr_st_open(path, f, d) != 0) return false;
  gr_loc at = gr_loc_file(path);
  const char *meta = f->metadata_json;
  int64_t version = 0, phase, phases, seed, bs, samples, crc;
  char starts[GR_MAX_PHASES * 21 + 1];
  memset(pos, 0, sizeof *pos);
  if (!meta_int(meta, "graft_checkpoint", &version)) {
    gr_error(d, at, "not a graft checkpoint (its metadata has no 'graft_checkpoint'); weights saved with --save start a run through 'init'");
  } else if (version != CKPT_VERSION) {
    gr_error(d, at, "a checkpoint of version %lld; this graft reads version %d", (long long)version, CKPT_VERSION);
  } else if (!meta_int(meta, "phase", &phase) || !meta_int(meta, "epoch", &pos->epoch) || !meta_int(meta, "batch", &pos->batch) ||
             !meta_int(meta, "step", &pos->step) || !meta_int(meta, "phases", &phases) || !meta_int(meta, "seed", &seed) ||
             !meta_int(meta, "batch_size", &bs) || !meta_int(meta, "samples", &samples) || !meta_int(meta, "crc32", &crc) ||
             !meta_get(meta, "phase_start", starts, sizeof starts) || phases < 1 || phases > GR_MAX_PHASES || phase < 0 || phase >= phases) {
    gr_error(d, at, "the checkpoint's metadata is incomplete or out of range");
  } else {
    pos->phase = (int)phase;
    pos->n_phases = (int)phases;
    pos->seed = (uint64_t)seed;
    pos->batch_size = bs;
    pos->samples = samples;
    char *p = starts;
    for (int k = 0; k < pos->n_phases; k++) {
      pos->phase_start[k] = strtoll(p, &p, 10);
      if (*p == ',') p++;
    }
    gr_st_out *t = calloc((size_t)f->n + 1, sizeof *t);
    GR_CHECK(t != NULL, "out of memory");
    bool f32 = true;
    for (int i = 0; i < f->n; i++) {
      t[i] = (gr_st_out){f->tensors[i].name, f->tensors[i].rank, f->tensors[i].shape, (const float *)f->tensors[i].data};
      f32 &= f->tensors[i].dtype == GR_ST_F32;
    }
    uLong sum = crc_of(t, f->n);
    free(t);
    if (f32 && sum == (uLong)crc) return true;
    gr_error(d, at, "the checkpoint is damaged: its data does not match the checksum it was written with");
  }
  gr_st_close(f);
  return false;
}

static void keep_message(void *user, gr_diag_kind kind, gr_loc loc, const char *msg) {
  (void)loc;
  if (kind == GR_DIAG_ERROR) snprintf(user, 1024, "%s", msg);
}

bool gr_checkpoint_open(const char *path, gr_st_file *f, gr_ckpt_pos *pos, char **used, FILE *log, gr_diag *d) {
  struct stat st;
  if (stat(path, &st) != 0) {
    gr_error(d, gr_loc_file(path), "cannot open the checkpoint to resume from: %s", strerror(errno));
    return false;
  }
  if (!S_ISDIR(st.st_mode)) {
    *used = strdup(path);
    GR_CHECK(*used != NULL, "out of memory");
    return open_checkpoint(path, f, pos, d);
  }
  int count;
  char **files = list_checkpoints(path, false, &count);
  bool ok = false;
  for (int i = 0; i < count && !ok; i++) { /* the newest that reads whole; a damaged one is skipped, saying why */
    gr_diag quiet;
    char why[1024] = "";
    gr_diag_init(&quiet);
    quiet.sink = keep_message;
    quiet.user = why;
    ok = open_checkpoint(files[i], f, pos, &quiet);
    gr_diag_free(&quiet);
    if (!ok) gr_warning(d, gr_loc_file(files[i]), "skipping this checkpoint: %s", why);
    if (ok) *used = files[i], files[i] = NULL;
  }
  for (int i = 0; i < count; i++) free(files[i]);
  free(files);
  if (!ok) gr_error(d, gr_loc_file(path), count ? "no checkpoint in this directory reads whole" : "no checkpoint (step-*.safetensors) in this directory");
  return ok;
}

bool gr_checkpoint_restore(gr_session *s, const gr_st_file *f, gr_diag *d) {
  const gr_rt_model *m = gr_session_model(s);
  for (int pass = 0; pass < 2; pass++) {
    int count = pass ? m->n_states : m->n_params;
    for (int i = 0; i < count; i++) {
      const gr_rt_param *p = pass ? &m->states[i] : &m->params[i];
      const gr_st_tensor *t = gr_st_find(f, p->name);
      float *dst = pass ? gr_session_state(s, i) : gr_session_param(s, i);
      if (!t && pass) { /* state of a parameter that starts training in a later phase: zero */
        memset(dst, 0, sizeof(float) * (size_t)p->numel);
        continue;
      }
      if (!t || t->nbytes != 4 * p->numel) {
        gr_error(d, gr_loc_file(f->path), "the checkpoint %s '%s' that the plan's model has (is it another model's checkpoint?)",
                 t ? "has a wrongly sized" : "lacks the", p->name);
        return false;
      }
      memcpy(dst, t->data, sizeof(float) * (size_t)p->numel);
    }
  }
  return true;
}
