/* plan.c — the plan frontend: what to train, on which data, with which loss and optimizer.
 *
 * Schema (docs/format.md has the full reference):
 *   model: model.yaml                 required; relative paths are relative to the plan file
 *   data:                             required
 *     format: idx                     optional (idx is the only format so far)
 *     train: {images: F, labels: F}   required; IDX files, plain or .gz
 *     test:  {images: F, labels: F}   optional; evaluated after every epoch
 *     normalize: {mean: 0, std: 1}    optional; input = (pixel/255 - mean) / std
 *   loss: cross_entropy               required
 *   optimizer:                        required
 *     type: sgd                       required
 *     learning_rate: 0.01             required, > 0
 *     momentum: 0.9                   optional, default 0, in [0, 1)
 *     weight_decay: 0                 optional, default 0
 *     nesterov: false                 optional, needs momentum > 0
 *   batch_size: 64                    required, 1 .. 65536
 *   epochs: 2                         required, 1 .. 100000
 *   seed: 0                           optional, default 0
 *   log_every: 100                    optional, default 100 (steps between training metric records) */
#include "frontends/frontend.h"
#include "frontends/yamldoc.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

const char *const gr_loss_names[GR_LOSS_COUNT + 1] = {"cross_entropy", NULL};
const char *const gr_opt_names[GR_OPT_COUNT + 1] = {"sgd", NULL};

static const char *const plan_keys[] = {"model", "data", "loss", "optimizer", "batch_size", "epochs", "seed", "log_every", NULL};
static const char *const data_keys[] = {"format", "train", "test", "normalize", NULL};
static const char *const split_keys[] = {"images", "labels", NULL};
static const char *const norm_keys[] = {"mean", "std", NULL};
static const char *const opt_keys[] = {"type", "learning_rate", "momentum", "weight_decay", "nesterov", NULL};
static const char *const formats[] = {"idx", NULL};

static bool parse_split(gr_ydoc *y, gr_ynode *n, const char *what, gr_data_split *s) {
  if (!gr_ymap_check(y, n, what, split_keys)) return false;
  s->loc = gr_yloc(y, n);
  gr_ynode *im = gr_yreq(y, n, "images", what), *lb = gr_yreq(y, n, "labels", what);
  if (!im || !lb) return false;
  const char *a, *b;
  if (!gr_ystr(y, im, "'images'", &a) || !gr_ystr(y, lb, "'labels'", &b)) return false;
  s->images = gr_ypath(y, a);
  s->labels = gr_ypath(y, b);
  s->images_loc = gr_yloc(y, im);
  s->labels_loc = gr_yloc(y, lb);
  s->present = true;
  return true;
}

static bool parse_data(gr_ydoc *y, gr_ynode *n, gr_plan *p) {
  if (!gr_ymap_check(y, n, "'data'", data_keys)) return false;
  p->data_loc = gr_yloc(y, n);
  bool ok = true;
  gr_ynode *f = gr_yget(y, n, "format");
  int fmt;
  if (f) ok &= gr_yenum(y, f, "data format", formats, &fmt);
  gr_ynode *tr = gr_yreq(y, n, "train", "'data'");
  ok &= tr && parse_split(y, tr, "'train'", &p->train);
  gr_ynode *te = gr_yget(y, n, "test");
  if (te) ok &= parse_split(y, te, "'test'", &p->test);
  gr_ynode *nm = gr_yget(y, n, "normalize");
  if (nm) {
    ok &= gr_ymap_check(y, nm, "'normalize'", norm_keys) && gr_yopt_float(y, nm, "mean", -1e6, 1e6, &p->norm_mean) &&
          gr_yopt_float(y, nm, "std", 1e-12, 1e6, &p->norm_std);
  }
  return ok;
}

static bool parse_optimizer(gr_ydoc *y, gr_ynode *n, gr_plan *p) {
  if (!gr_ymap_check(y, n, "'optimizer'", opt_keys)) return false;
  p->opt.loc = gr_yloc(y, n);
  gr_ynode *t = gr_yreq(y, n, "type", "'optimizer'");
  gr_ynode *lr = gr_yreq(y, n, "learning_rate", "'optimizer'");
  int kind = 0;
  bool ok = t && gr_yenum(y, t, "optimizer", gr_opt_names, &kind);
  bool lr_ok = lr && gr_yfloat(y, lr, "'learning_rate'", -1e6, 1e6, &p->opt.lr);
  if (lr_ok && p->opt.lr <= 0) {
    gr_error(y->diag, gr_yloc(y, lr), "'learning_rate' must be greater than 0, got %g", p->opt.lr);
    lr_ok = false;
  }
  ok &= lr_ok;
  ok &= gr_yopt_float(y, n, "momentum", 0, 0.999999, &p->opt.momentum);
  ok &= gr_yopt_float(y, n, "weight_decay", 0, 1e3, &p->opt.weight_decay);
  ok &= gr_yopt_bool(y, n, "nesterov", &p->opt.nesterov);
  p->opt.kind = (gr_opt_kind)kind;
  if (ok && p->opt.nesterov && p->opt.momentum <= 0) {
    gr_error(y->diag, gr_ykey_loc(y, n, "nesterov"), "nesterov needs a momentum greater than 0");
    ok = false;
  }
  return ok;
}

bool gr_plan_load(const char *path, gr_arena *a, gr_diag *d, gr_plan *p) {
  memset(p, 0, sizeof *p);
  p->norm_std = 1.0;
  p->log_every = 100;
  gr_ydoc y;
  if (!gr_ydoc_load(&y, path, d, a)) {
    gr_ydoc_free(&y);
    return false;
  }
  int errors0 = d->n_errors;
  p->path = y.path;
  gr_ynode *root = gr_yroot(&y);
  if (gr_ymap_check(&y, root, "the plan", plan_keys)) {
    gr_ynode *m = gr_yreq(&y, root, "model", "the plan");
    const char *mp;
    if (m && gr_ystr(&y, m, "'model'", &mp)) {
      p->model_path = gr_ypath(&y, mp);
      p->model_loc = gr_yloc(&y, m);
      /* checked here, so that the error points at this line rather than only naming the missing file */
      FILE *mf = fopen(p->model_path, "rb");
      struct stat st;
      int err = !mf ? errno : fstat(fileno(mf), &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
      if (mf) fclose(mf);
      if (err) gr_error(d, p->model_loc, "cannot open model file '%s': %s", p->model_path, strerror(err));
    }
    gr_ynode *data = gr_yreq(&y, root, "data", "the plan");
    if (data) parse_data(&y, data, p);
    gr_ynode *loss = gr_yreq(&y, root, "loss", "the plan");
    int lk;
    if (loss && gr_yenum(&y, loss, "loss", gr_loss_names, &lk)) {
      p->loss = (gr_loss_kind)lk;
      p->loss_loc = gr_yloc(&y, loss);
    }
    gr_ynode *opt = gr_yreq(&y, root, "optimizer", "the plan");
    if (opt) parse_optimizer(&y, opt, p);
    gr_ynode *bs = gr_yreq(&y, root, "batch_size", "the plan");
    if (bs && gr_yint(&y, bs, "'batch_size'", 1, 65536, &p->batch_size)) p->batch_loc = gr_yloc(&y, bs);
    gr_ynode *ep = gr_yreq(&y, root, "epochs", "the plan");
    if (ep) gr_yint(&y, ep, "'epochs'", 1, 100000, &p->epochs);
    int64_t seed = 0;
    if (gr_yopt_int(&y, root, "seed", 0, INT64_MAX, &seed)) p->seed = (uint64_t)seed;
    gr_yopt_int(&y, root, "log_every", 1, 1 << 30, &p->log_every);
  }
  gr_ydoc_free(&y);
  return d->n_errors == errors0;
}
