/* plan.c — the plan frontend: what to train, on which data, with which loss and optimizer.
 *
 * Schema (docs/format.md has the full reference):
 *   model: model.yaml                 required; relative paths are relative to the plan file
 *   init: weights.safetensors         optional; parameters loaded by name (strict), else random; or
 *                                     {file, rename, exclude}: see transfer.c, with freeze, unfreeze,
 *                                     batchnorm and param_groups
 *   data:                             required
 *     format: idx                     idx (default), tensors or images
 *     train: {images: F, labels: F}   required; idx: IDX files, plain or .gz; tensors: {file: F}, a
 *     test:  {images: F, labels: F}   safetensors file with x (F32 [n, ...]) and y (integer [n]);
 *                                     images: {dir: D}, one sub-folder of PNG/JPEG files per class;
 *                                     test is optional, evaluated after every epoch
 *     normalize: {mean: 0, std: 1}    optional (idx, images); input = (pixel/255 - mean) / std; for
 *                                     images also per channel: {mean: [0.485, 0.456, 0.406], std: [...]}
 *     resize: 36                      images: the shorter side to 36 (or [h, w]), before the crop to
 *                                     the model's input size (centred; random in training with:)
 *     random_crop: false, flip: false images: training augmentation
 *     shuffle: true                   optional; reshuffle the training set every epoch
 *     classes: [5, 6, 7, 8, 9]        optional; only these labels, renumbered 0, 1, ... as listed
 *     per_class: 100                  optional; the first 100 training samples of each class
 *   loss: cross_entropy               required; or {type: cross_entropy, label_smoothing: 0.1};
 *                                     or bce_with_logits, mse (float targets of the output's shape)
 *   optimizer:                        required
 *     type: sgd                       required: sgd, adam or adamw (torch.optim's formulas)
 *     learning_rate: 0.01             required, > 0
 *     momentum: 0.9                   sgd only, default 0, in [0, 1)
 *     nesterov: false                 sgd only, needs momentum > 0
 *     betas: [0.9, 0.999]             adam/adamw only
 *     eps: 1e-8                       adam/adamw only
 *     weight_decay: 0                 default 0 (adamw: 0.01, decoupled)
 *     clip_grad_norm: 1.0             optional: gradients scaled to this global L2 norm at most
 *   schedule:                         optional; the learning rate per epoch (or step), see below
 *     type: cosine                    constant, step, multistep, cosine
 *     unit: epoch                     epoch (default) or step
 *     step_size: 30, gamma: 0.1       step
 *     milestones: [30, 60], gamma     multistep
 *     min_lr: 0                       cosine
 *     warmup: 0, warmup_factor: 0.1   linear warm-up over the first `warmup` units
 *   batch_size: 64                    required, 1 .. 65536
 *   epochs: 2                         required, 1 .. 100000
 *   seed: 0                           optional, default 0
 *   log_every: 100                    optional, default 100 (steps between training metric records)
 *   eval_every: 1                     optional, default 1: evaluate every this many epochs (and after the last)
 *   feature_cache: auto               optional: auto (default) computes a frozen prefix once per sample, in
 *                                     memory or, over the budget, in a file; memory: never a file; off
 *   feature_cache_mb: 2048            optional: the cache's memory budget (MiB)
 *   feature_cache_dir: /var/tmp       optional: where a cache over the budget goes (default $TMPDIR or /tmp)
 *   fold_batchnorm: true              optional: frozen batchnorms run inside the convolutions before them
 *   checkpoint:                       optional: checkpoints to resume from (graft train --resume)
 *     dir: checkpoints                required; relative to the plan
 *     every_steps: 500                optional: also every this many steps
 *     every_epoch: true               optional, default true
 *     keep: 3                         optional, default 3: the newest this many stay
 *   on_nan: stop                      optional: stop (default), skip or rollback, when a step's loss is not finite */
#include "frontends/frontend.h"
#include "frontends/yamldoc.h"
#include <stdio.h>
#include <string.h>

const char *const gr_loss_names[GR_LOSS_COUNT + 1] = {"cross_entropy", "bce_with_logits", "mse", NULL};
const char *const gr_opt_names[GR_OPT_COUNT + 1] = {"sgd", "adam", "adamw", NULL};

static const char *const plan_keys[] = {"model", "init", "data", "loss", "optimizer", "schedule", "batch_size", "epochs", "seed", "log_every", "eval_every", "feature_cache", "feature_cache_mb", "feature_cache_dir", "fold_batchnorm", "checkpoint", "on_nan", "phases",
                                        "freeze", "unfreeze", "batchnorm", "param_groups", "domain_adaptation", NULL};
static const char *const data_keys[] = {"format", "train", "test", "normalize", "shuffle", "classes", "per_class", "resize", "random_crop",
                                        "flip", NULL};
static const char *const split_keys[] = {"images", "labels", NULL};
static const char *const tensor_split_keys[] = {"file", NULL};
static const char *const image_split_keys[] = {"dir", NULL};
static const char *const norm_keys[] = {"mean", "std", NULL};
static const char *const opt_keys[] = {"type", "learning_rate", "momentum", "weight_decay", "nesterov", "betas", "eps", "clip_grad_norm", NULL};
static const char *const sched_keys[] = {"type", "unit", "step_size", "gamma", "milestones", "min_lr", "warmup", "warmup_factor", "alpha", "beta", NULL};
static const char *const sched_units[] = {"epoch", "step", NULL};
const char *const gr_data_format_names[GR_DATA_FORMAT_COUNT + 1] = {"idx", "tensors", "images", NULL};

/* idx: {images: F, labels: F} (labels may be left out when optional: unlabelled data); tensors:
 * {file: F}; images: {dir: D} */
static bool parse_split(gr_ydoc *y, gr_ynode *n, const char *what, gr_data_format fmt, bool labels_optional, gr_data_split *s) {
  const char *const *keys = fmt == GR_DATA_TENSORS ? tensor_split_keys : fmt == GR_DATA_IMAGES ? image_split_keys : split_keys;
  if (!gr_ymap_check(y, n, what, keys)) return false;
  s->loc = gr_yloc(y, n);
  if (fmt != GR_DATA_IDX) {
    const char *key = fmt == GR_DATA_TENSORS ? "file" : "dir";
    gr_ynode *f = gr_yreq(y, n, key, what);
    const char *a;
    if (!f || !gr_ystr(y, f, fmt == GR_DATA_TENSORS ? "'file'" : "'dir'", &a)) return false;
    s->images = gr_ypath(y, a);
    s->images_loc = gr_yloc(y, f);
    s->present = true;
    return true;
  }
  gr_ynode *im = gr_yreq(y, n, "images", what), *lb = labels_optional ? gr_yget(y, n, "labels") : gr_yreq(y, n, "labels", what);
  if (!im || (!lb && !labels_optional)) return false;
  const char *a, *b;
  if (!gr_ystr(y, im, "'images'", &a) || (lb && !gr_ystr(y, lb, "'labels'", &b))) return false;
  s->images = gr_ypath(y, a);
  s->images_loc = gr_yloc(y, im);
  if (lb) {
    s->labels = gr_ypath(y, b);
    s->labels_loc = gr_yloc(y, lb);
  }
  s->present = true;
  return true;
}

static bool parse_data(gr_ydoc *y, gr_ynode *n, gr_plan *p) {
  if (!gr_ymap_check(y, n, "'data'", data_keys)) return false;
  p->data_loc = gr_yloc(y, n);
  bool ok = true;
  gr_ynode *f = gr_yget(y, n, "format");
  int fmt = GR_DATA_IDX;
  if (f && !gr_yenum(y, f, "data format", gr_data_format_names, &fmt)) return false;
  p->data_format = (gr_data_format)fmt;
  gr_ynode *tr = gr_yreq(y, n, "train", "'data'");
  ok &= tr && parse_split(y, tr, "'train'", p->data_format, false, &p->train);
  gr_ynode *te = gr_yget(y, n, "test");
  if (te) ok &= parse_split(y, te, "'test'", p->data_format, false, &p->test);
  ok &= gr_yopt_bool(y, n, "shuffle", &p->shuffle);
  gr_ynode *cl = gr_yget(y, n, "classes");
  if (cl) { /* a subset of the labels, renumbered in the order listed */
    int k = gr_ylist_len(cl);
    if (k < 1 || k > 1 << 20) {
      gr_error(y->diag, gr_yloc(y, cl), "'classes' must be a non-empty list of labels, like [5, 6, 7, 8, 9], got %s", gr_ydescribe(y, cl));
      return false;
    }
    p->select = gr_alloc(y->arena, sizeof(int32_t) * (size_t)k);
    p->select_loc = gr_yloc(y, cl);
    for (int i = 0; i < k; i++) {
      int64_t v;
      gr_ynode *e = gr_ylist_at(y, cl, i);
      if (!gr_yint(y, e, "a class in 'classes'", 0, INT32_MAX, &v)) return false;
      for (int j = 0; j < i; j++)
        if (p->select[j] == v) {
          gr_error(y->diag, gr_yloc(y, e), "class %lld is listed twice in 'classes'", (long long)v);
          return false;
        }
      p->select[p->n_select++] = (int32_t)v;
    }
  }
  ok &= gr_yopt_int(y, n, "per_class", 1, INT32_MAX, &p->per_class);
  if (p->per_class) p->per_class_loc = gr_yloc(y, gr_yget(y, n, "per_class"));
  gr_ynode *nm = gr_yget(y, n, "normalize");
  if (nm && p->data_format == GR_DATA_TENSORS) {
    gr_error(y->diag, gr_ykey_loc(y, n, "normalize"), "'normalize' applies to idx images and image folders; tensors data is used as it is");
    return false;
  }
  static const char *const image_only[] = {"resize", "random_crop", "flip", NULL};
  for (int i = 0; image_only[i]; i++)
    if (gr_yget(y, n, image_only[i]) && p->data_format != GR_DATA_IMAGES) {
      gr_error(y->diag, gr_ykey_loc(y, n, image_only[i]), "'%s' applies to image folders ('format: images'), not %s data", image_only[i],
               gr_data_format_names[p->data_format]);
      return false;
    }
  ok &= gr_yopt_bool(y, n, "random_crop", &p->pixels.random_crop) && gr_yopt_bool(y, n, "flip", &p->pixels.flip);
  gr_ynode *rs = gr_yget(y, n, "resize");
  if (rs && rs->type == YAML_SEQUENCE_NODE) { /* [h, w] */
    int64_t h = 0, w = 0;
    if (gr_ylist_len(rs) != 2) {
      gr_error(y->diag, gr_yloc(y, rs), "'resize' is a size (the shorter side) or [height, width], got a list of %d", gr_ylist_len(rs));
      return false;
    }
    ok &= gr_yint(y, gr_ylist_at(y, rs, 0), "a height", 1, GR_IMAGE_MAX_SIDE, &h) && gr_yint(y, gr_ylist_at(y, rs, 1), "a width", 1, GR_IMAGE_MAX_SIDE, &w);
    p->pixels.resize_h = (int)h;
    p->pixels.resize_w = (int)w;
  } else if (rs) {
    int64_t side = 0;
    ok &= gr_yint(y, rs, "'resize' (the shorter side, or [height, width])", 1, GR_IMAGE_MAX_SIDE, &side);
    p->pixels.resize_h = (int)side;
  }
  p->n_norm = 1;
  if (nm) {
    p->norm_loc = gr_yloc(y, nm);
    if (!gr_ymap_check(y, nm, "'normalize'", norm_keys)) return false;
    static const char *const keys[2] = {"mean", "std"};
    int len[2] = {0, 0};
    for (int k = 0; k < 2; k++) { /* a number for every channel, or one per channel */
      gr_ynode *v = gr_yget(y, nm, keys[k]);
      double *out = k ? p->pixels.std : p->pixels.mean, lo = k ? 1e-12 : -1e6;
      if (!v) continue;
      if (v->type != YAML_SEQUENCE_NODE) {
        ok &= gr_yfloat(y, v, k ? "'std'" : "'mean'", lo, 1e6, &out[0]);
        out[1] = out[2] = out[0];
        continue;
      }
      len[k] = gr_ylist_len(v);
      if (p->data_format != GR_DATA_IMAGES || (len[k] != 1 && len[k] != 3)) {
        gr_error(y->diag, gr_yloc(y, v), p->data_format == GR_DATA_IMAGES ? "'%s' takes one number, or a list of one per channel (1 or 3)"
                                                                          : "'%s' takes one number for idx images (they have one channel)",
                 keys[k]);
        return false;
      }
      for (int i = 0; i < len[k]; i++) ok &= gr_yfloat(y, gr_ylist_at(y, v, i), k ? "a std" : "a mean", lo, 1e6, &out[i]);
      for (int i = len[k]; i < 3; i++) out[i] = out[0];
    }
    if (len[0] && len[1] && len[0] != len[1]) {
      gr_error(y->diag, p->norm_loc, "'normalize' has %d means but %d stds", len[0], len[1]);
      return false;
    }
    p->n_norm = len[0] > len[1] ? len[0] : len[1] ? len[1] : 1;
  }
  return ok;
}

static bool parse_checkpoint(gr_ydoc *y, gr_ynode *n, gr_plan *p) {
  static const char *const keys[] = {"dir", "every_steps", "every_epoch", "keep", NULL};
  if (!gr_ymap_check(y, n, "'checkpoint'", keys)) return false;
  gr_ynode *dn = gr_yreq(y, n, "dir", "'checkpoint'");
  const char *dir;
  if (!dn || !gr_ystr(y, dn, "'dir'", &dir)) return false;
  p->ckpt.dir = gr_ypath(y, dir);
  p->ckpt.every_epoch = true;
  p->ckpt.keep = 3;
  p->ckpt.loc = gr_yloc(y, n);
  bool ok = gr_yopt_int(y, n, "every_steps", 1, INT64_MAX / 2, &p->ckpt.every_steps) && gr_yopt_bool(y, n, "every_epoch", &p->ckpt.every_epoch) &&
            gr_yopt_int(y, n, "keep", 1, 1000000, &p->ckpt.keep);
  if (ok && !p->ckpt.every_steps && !p->ckpt.every_epoch) {
    gr_error(y->diag, p->ckpt.loc, "'checkpoint' with every_epoch: false needs every_steps, or it would never write one");
    return false;
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
  p->opt.kind = (gr_opt_kind)kind;
  bool sgd = kind == GR_OPT_SGD;
  p->opt.beta1 = 0.9;
  p->opt.beta2 = 0.999;
  p->opt.eps = 1e-8;
  p->opt.weight_decay = kind == GR_OPT_ADAMW ? 0.01 : 0; /* PyTorch's defaults */
  if (!ok) return false;
  /* keys that belong to another optimizer */
  static const char *const sgd_only[] = {"momentum", "nesterov", NULL}, *const adam_only[] = {"betas", "eps", NULL};
  for (const char *const *k = sgd ? adam_only : sgd_only; *k; k++) {
    if (!gr_yget(y, n, *k)) continue;
    gr_error(y->diag, gr_ykey_loc(y, n, *k), "'%s' does not apply to the %s optimizer (it is for %s)", *k,
             gr_opt_names[kind], sgd ? "adam and adamw" : "sgd");
    ok = false;
  }
  ok &= gr_yopt_float(y, n, "momentum", 0, 0.999999, &p->opt.momentum);
  ok &= gr_yopt_float(y, n, "weight_decay", 0, 1e3, &p->opt.weight_decay);
  ok &= gr_yopt_bool(y, n, "nesterov", &p->opt.nesterov);
  ok &= gr_yopt_float(y, n, "clip_grad_norm", 1e-12, 1e12, &p->opt.clip_grad_norm);
  ok &= gr_yopt_float(y, n, "eps", 0, 1, &p->opt.eps);
  gr_ynode *b = gr_yget(y, n, "betas");
  if (b) {
    if (gr_ylist_len(b) != 2) {
      gr_error(y->diag, gr_yloc(y, b), "'betas' must be a list of two numbers in [0, 1), like [0.9, 0.999], got %s", gr_ydescribe(y, b));
      ok = false;
    } else {
      ok &= gr_yfloat(y, gr_ylist_at(y, b, 0), "'betas'", 0, 0.999999999, &p->opt.beta1) &&
            gr_yfloat(y, gr_ylist_at(y, b, 1), "'betas'", 0, 0.999999999, &p->opt.beta2);
    }
  }
  if (ok && p->opt.nesterov && p->opt.momentum <= 0) {
    gr_error(y->diag, gr_ykey_loc(y, n, "nesterov"), "nesterov needs a momentum greater than 0");
    ok = false;
  }
  return ok;
}

/* schedule: {type: constant|step|multistep|cosine, unit: epoch|step, step_size, gamma, milestones,
 *            min_lr, warmup, warmup_factor} — see runtime/schedule.h for the formulas */
static bool parse_schedule(gr_ydoc *y, gr_ynode *n, gr_plan *p) {
  gr_schedule *s = &p->schedule;
  if (!gr_ymap_check(y, n, "'schedule'", sched_keys)) return false;
  gr_ynode *t = gr_yreq(y, n, "type", "'schedule'");
  int kind = 0, unit = 0;
  if (!t || !gr_yenum(y, t, "schedule", gr_sched_names, &kind)) return false;
  s->kind = (gr_sched_kind)kind;
  gr_ynode *u = gr_yget(y, n, "unit");
  if (u && !gr_yenum(y, u, "schedule unit", sched_units, &unit)) return false;
  s->per_step = unit == 1 || (!u && kind == GR_SCHED_DANN); /* dann's progress p moves every step unless told */
  /* keys each type takes */
  static const char *const takes[GR_SCHED_COUNT][4] = {
      [GR_SCHED_CONSTANT] = {NULL}, [GR_SCHED_STEP] = {"step_size", "gamma", NULL},
      [GR_SCHED_MULTISTEP] = {"milestones", "gamma", NULL}, [GR_SCHED_COSINE] = {"min_lr", NULL}, [GR_SCHED_DANN] = {"alpha", "beta", NULL}};
  static const char *const specific[] = {"step_size", "gamma", "milestones", "min_lr", "alpha", "beta", NULL};
  bool ok = true;
  for (const char *const *k = specific; *k; k++) {
    if (!gr_yget(y, n, *k)) continue;
    bool fits = false;
    for (int i = 0; takes[kind][i]; i++) fits |= !strcmp(takes[kind][i], *k);
    if (!fits) {
      gr_error(y->diag, gr_ykey_loc(y, n, *k), "'%s' does not apply to a %s schedule", *k, gr_sched_names[kind]);
      ok = false;
    }
  }
  s->gamma = 0.1;
  s->warmup_factor = 0.1;
  if (kind == GR_SCHED_STEP) {
    gr_ynode *ss = gr_yreq(y, n, "step_size", "a step schedule");
    ok &= ss && gr_yint(y, ss, "'step_size'", 1, INT64_MAX / 2, &s->step_size);
  }
  if (kind == GR_SCHED_MULTISTEP) {
    gr_ynode *ms = gr_yreq(y, n, "milestones", "a multistep schedule");
    int len = ms ? gr_ylist_len(ms) : 0;
    if (ms && (len < 1 || len > GR_SCHED_MAX_MILESTONES)) {
      gr_error(y->diag, gr_yloc(y, ms), "'milestones' must be a list of 1 to %d increasing integers, got %s",
               GR_SCHED_MAX_MILESTONES, gr_ydescribe(y, ms));
      ok = false;
    }
    for (int i = 0; ms && ok && i < len; i++) {
      gr_ynode *e = gr_ylist_at(y, ms, i);
      ok &= gr_yint(y, e, "a milestone", 1, INT64_MAX / 2, &s->milestones[i]);
      if (ok && i > 0 && s->milestones[i] <= s->milestones[i - 1]) {
        gr_error(y->diag, gr_yloc(y, e), "milestones must increase: %lld after %lld", (long long)s->milestones[i],
                 (long long)s->milestones[i - 1]);
        ok = false;
      }
    }
    s->n_milestones = len;
  }
  ok &= gr_yopt_float(y, n, "gamma", 0, 1e6, &s->gamma);
  ok &= gr_yopt_float(y, n, "min_lr", 0, 1e6, &s->min_lr);
  s->alpha = 10, s->beta = 0.75;
  ok &= gr_yopt_float(y, n, "alpha", 0, 1e6, &s->alpha) && gr_yopt_float(y, n, "beta", 0, 100, &s->beta);
  ok &= gr_yopt_int(y, n, "warmup", 0, INT64_MAX / 2, &s->warmup);
  ok &= gr_yopt_float(y, n, "warmup_factor", 0, 1, &s->warmup_factor);
  return ok;
}

const char *const gr_stream_names[GR_STREAM_COUNT + 1] = {"source", "target", "both", NULL};

/* domain_adaptation: {features: LAYER, head: [layers], target: {train: SPLIT, test: SPLIT},
 *                     source_fraction: 0.5, lambda: dann | NUMBER | {schedule: dann|constant, gamma, max},
 *                     losses: {label: source|target|both, domain: both}}
 * The head's layers are checked when the compiler builds them (gr_model_head). */
static bool parse_domain(gr_ydoc *y, gr_ynode *n, gr_plan *p) {
  static const char *const keys[] = {"features", "head", "target", "source_fraction", "lambda", "losses", NULL};
  static const char *const target_keys[] = {"train", "test", NULL};
  static const char *const lambda_keys[] = {"schedule", "gamma", "max", NULL};
  static const char *const lambda_kinds[] = {"dann", "constant", NULL};
  static const char *const loss_keys[] = {"label", "domain", NULL};
  static const char *const domain_streams[] = {"both", NULL};
  gr_domain *dm = &p->domain;
  dm->present = true;
  dm->loc = gr_yloc(y, n);
  dm->source_fraction = 0.5;
  dm->lambda_max = 1;
  dm->lambda_gamma = 10;
  if (!gr_ymap_check(y, n, "'domain_adaptation'", keys)) return false;
  gr_ynode *f = gr_yreq(y, n, "features", "'domain_adaptation'"), *h = gr_yreq(y, n, "head", "'domain_adaptation'");
  gr_ynode *t = gr_yreq(y, n, "target", "'domain_adaptation' (the unlabelled target data)");
  if (!f || !h || !t || !gr_ystr(y, f, "'features' (a layer of the model)", &dm->features)) return false;
  dm->features_loc = gr_yloc(y, f);
  dm->head_loc = gr_yloc(y, h);
  if (!gr_ymap_check(y, t, "'target'", target_keys)) return false;
  gr_ynode *tr = gr_yreq(y, t, "train", "'target'"), *te = gr_yget(y, t, "test");
  if (!tr) return false;
  bool ok = parse_split(y, tr, "'train'", p->data_format, true, &dm->train); /* unlabelled: labels optional */
  if (te) ok &= parse_split(y, te, "'test'", p->data_format, false, &dm->test);
  ok &= gr_yopt_float(y, n, "source_fraction", 1e-6, 1 - 1e-6, &dm->source_fraction);
  gr_ynode *lam = gr_yget(y, n, "lambda");
  if (lam && lam->type == YAML_MAPPING_NODE) {
    int kind = 0;
    gr_ynode *sk = gr_yget(y, lam, "schedule");
    ok &= gr_ymap_check(y, lam, "'lambda'", lambda_keys) && (!sk || gr_yenum(y, sk, "lambda schedule", lambda_kinds, &kind));
    dm->lambda_constant = kind == 1;
    ok &= gr_yopt_float(y, lam, "gamma", 0, 1e6, &dm->lambda_gamma) && gr_yopt_float(y, lam, "max", 0, 1e6, &dm->lambda_max);
  } else if (lam && lam->type == YAML_SCALAR_NODE && !strcmp((const char *)lam->data.scalar.value, "dann")) {
    dm->lambda_constant = false;
  } else if (lam) {
    dm->lambda_constant = true;
    ok &= gr_yfloat(y, lam, "'lambda' (dann, a number, or {schedule, gamma, max})", 0, 1e6, &dm->lambda_max);
  }
  gr_ynode *ls = gr_yget(y, n, "losses");
  if (ls) {
    int dk = 0;
    gr_ynode *lb = gr_yget(y, ls, "label"), *dn = gr_yget(y, ls, "domain");
    ok &= gr_ymap_check(y, ls, "'losses'", loss_keys) && (!lb || gr_yenum(y, lb, "label loss stream", gr_stream_names, &dm->label_on)) &&
          (!dn || gr_yenum(y, dn, "domain loss stream", domain_streams, &dk));
    if (lb) dm->label_on_loc = gr_yloc(y, lb);
  }
  if (ok && p->n_select && (dm->label_on != GR_STREAM_SOURCE || dm->test.present)) {
    gr_error(y->diag, p->select_loc, "'classes' renumbers the source labels only; with domain adaptation, the target data's labels would not match");
    ok = false;
  }
  if (ok && dm->label_on != GR_STREAM_SOURCE && p->data_format == GR_DATA_IDX && !dm->train.labels) {
    gr_error(y->diag, dm->label_on_loc, "the label loss applies to the target rows, but the target training data has no 'labels'");
    gr_note(y->diag, dm->train.loc, "the target training data is named here");
    ok = false;
  }
  return ok;
}

bool gr_plan_load(const char *path, gr_arena *a, gr_diag *d, gr_plan *p) {
  memset(p, 0, sizeof *p);
  p->pixels.std[0] = p->pixels.std[1] = p->pixels.std[2] = 1.0;
  p->log_every = 100;
  p->eval_every = 1;
  p->feature_cache = p->feature_cache_spill = true;
  p->fold_batchnorm = true;
  p->feature_cache_mb = 2048;
  p->shuffle = true;
  gr_ydoc y;
  if (!gr_ydoc_load(&y, path, (gr_loc){0}, d, a)) {
    gr_ydoc_free(&y);
    return false;
  }
  int errors0 = d->n_errors;
  p->path = y.path;
  gr_ynode *root = gr_yroot(&y);
  static const char *const elsewhere[] = {"format", "data", "train", "data", "test", "data", "normalize", "data", "shuffle", "data",
                                          "learning_rate", "optimizer", "momentum", "optimizer",
                                          "weight_decay", "optimizer", "nesterov", "optimizer", "betas", "optimizer",
                                          "eps", "optimizer", NULL};
  if (gr_ymap_check_hinted(&y, root, "the plan", plan_keys, elsewhere)) {
    gr_ynode *m = gr_yreq(&y, root, "model", "the plan");
    const char *mp;
    if (m && gr_ystr(&y, m, "'model'", &mp)) {
      p->model_path = gr_ypath(&y, mp);
      p->model_loc = gr_yloc(&y, m); /* the model frontend reports an unopenable model file here */
    }
    gr_ynode *init = gr_yget(&y, root, "init");
    if (init) gr_parse_init(&y, init, p);
    gr_parse_transfer(&y, root, p);
    gr_ynode *data = gr_yreq(&y, root, "data", "the plan");
    if (data) parse_data(&y, data, p);
    gr_ynode *loss = gr_yreq(&y, root, "loss", "the plan");
    int lk;
    gr_ynode *lt = loss;
    static const char *const loss_keys[] = {"type", "label_smoothing", NULL};
    if (loss && loss->type == YAML_MAPPING_NODE) /* {type: cross_entropy, label_smoothing: 0.1} */
      lt = gr_ymap_check(&y, loss, "'loss'", loss_keys) ? gr_yreq(&y, loss, "type", "'loss'") : NULL;
    if (lt && gr_yenum(&y, lt, "loss", gr_loss_names, &lk) &&
        (lt == loss || gr_yopt_float(&y, loss, "label_smoothing", 0, 0.999999, &p->label_smoothing))) {
      p->loss = (gr_loss_kind)lk;
      p->loss_loc = gr_yloc(&y, loss);
      if (p->loss != GR_LOSS_CROSS_ENTROPY && lt != loss && gr_yget(&y, loss, "label_smoothing"))
        gr_error(d, gr_ykey_loc(&y, loss, "label_smoothing"), "'label_smoothing' applies to the cross_entropy loss only");
    }
    gr_ynode *opt = gr_yreq(&y, root, "optimizer", "the plan");
    if (opt) parse_optimizer(&y, opt, p);
    gr_ynode *sched = gr_yget(&y, root, "schedule");
    if (sched) parse_schedule(&y, sched, p);
    gr_ynode *bs = gr_yreq(&y, root, "batch_size", "the plan");
    if (bs && gr_yint(&y, bs, "'batch_size'", 1, 65536, &p->batch_size)) p->batch_loc = gr_yloc(&y, bs);
    int64_t phased = 0; /* with phases, the epochs are theirs */
    for (int i = 0; i < p->tl.n_phases; i++) phased += p->tl.phases[i].epochs;
    bool has_phases = gr_yget(&y, root, "phases") != NULL;
    gr_ynode *ep = has_phases ? gr_yget(&y, root, "epochs") : gr_yreq(&y, root, "epochs", "the plan");
    if (ep && gr_yint(&y, ep, "'epochs'", 1, 100000, &p->epochs) && phased && p->epochs != phased)
      gr_error(d, gr_yloc(&y, ep), "'epochs' is %lld but the phases add up to %lld epochs (leave 'epochs' out)", (long long)p->epochs,
               (long long)phased);
    if (phased) p->epochs = phased;
    int64_t seed = 0;
    if (gr_yopt_int(&y, root, "seed", 0, INT64_MAX, &seed)) p->seed = (uint64_t)seed;
    gr_yopt_int(&y, root, "log_every", 1, 1 << 30, &p->log_every);
    gr_yopt_int(&y, root, "eval_every", 1, 100000, &p->eval_every);
    gr_yopt_int(&y, root, "feature_cache_mb", 0, 1 << 24, &p->feature_cache_mb);
    gr_ynode *fc = gr_yget(&y, root, "feature_cache");
    static const char *const fc_modes[] = {"off", "auto", "memory", NULL};
    int fm = 1;
    if (fc && gr_yenum(&y, fc, "feature_cache mode", fc_modes, &fm)) {
      p->feature_cache = fm != 0;
      p->feature_cache_spill = fm == 1;
    }
    gr_yopt_bool(&y, root, "fold_batchnorm", &p->fold_batchnorm);
    gr_ynode *ck = gr_yget(&y, root, "checkpoint");
    if (ck) parse_checkpoint(&y, ck, p);
    gr_ynode *nan = gr_yget(&y, root, "on_nan");
    static const char *const nan_modes[] = {"stop", "skip", "rollback", NULL};
    if (nan && gr_yenum(&y, nan, "on_nan action", nan_modes, &p->on_nan) && p->on_nan == 2 && !p->ckpt.dir)
      gr_error(d, gr_yloc(&y, nan), "on_nan: rollback goes back to the last checkpoint, but the plan writes none (add 'checkpoint: {dir: ...}')");
    gr_ynode *da = gr_yget(&y, root, "domain_adaptation");
    if (da) parse_domain(&y, da, p);
    gr_ynode *fd = gr_yget(&y, root, "feature_cache_dir");
    const char *dir;
    if (fd && gr_ystr(&y, fd, "'feature_cache_dir'", &dir)) p->feature_cache_dir = gr_ypath(&y, dir);
  }
  gr_ydoc_free(&y);
  return d->n_errors == errors0;
}
