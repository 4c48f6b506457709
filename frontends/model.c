/* model.c — the model frontend: a YAML model file becomes the forward IR graph.
 *
 * Schema (docs/format.md has the full reference):
 *   name: <string>                          optional, defaults to the file name
 *   input: {shape: [d1, d2, ...], name: x}  per-sample shape; the batch dimension N is implicit;
 *          dtype: float32 (default) or int32 (indices for embedding layers)
 *   layers:                                 a list, in order; each item is either an op name (`- relu`)
 *     - name: fc1                           or a mapping: `name` (optional, defaults to the layer's
 *       op: linear                          index, as in torch.nn.Sequential), `op` (required),
 *       in: flatten                         `in` (optional: an earlier layer or the input; defaults
 *       out_features: 256                   to the previous layer) and the op's own keys.
 *   output: fc3                             optional, defaults to the last layer
 *
 * Layer ops and their keys:
 *   linear   out_features (required), in_features (optional, checked), bias (default true)
 *   conv2d   out_channels, kernel_size (required); in_channels (checked), stride (1), padding (0),
 *            dilation (1), groups (1), bias (true); sizes are an integer or [height, width]
 *   maxpool2d, avgpool2d  kernel_size (required), stride (default: kernel_size), padding (0)
 *   global_avgpool  no keys: the mean over height and width, [N, C, 1, 1] (AdaptiveAvgPool2d(1))
 *   relu, sigmoid, tanh, identity           no keys
 *   flatten  start_dim (default 1), end_dim (default -1)
 *   batchnorm  num_features (checked), eps (1e-5), momentum (0.1), affine (true): torch.nn.BatchNorm
 *            over dimension 1; in training with batch statistics (running ones updated), else running
 *   gelu     no keys: x Phi(x), PyTorch's exact (erf) form
 *   dropout  p (0.5): in training zeroes each element with probability p and scales the rest by
 *            1/(1-p), a fresh mask every step (seeded by the plan); identity in evaluation
 *   softmax, log_softmax  no keys: over the last dimension
 *   add, mul in: [a, b, ...] (required): their sum / elementwise product, all of one shape
 *   concat   in: [a, b, ...] (required), dim (default 1, the channels): joined along dim
 *   layernorm  normalized_shape (default: the last dimension), eps (1e-5): torch.nn.LayerNorm
 *   embedding  num_embeddings, embedding_dim (required), padding_idx: torch.nn.Embedding on int32 input
 *   mean     dim (default 1): the mean along dim, which is removed (pools [N, T, D] to [N, D])
 *   reshape  shape (required): the per-sample shape, one dimension may be -1
 *
 * Parameters are named <layer>.weight / <layer>.bias, as in PyTorch's state_dict. Each layer is built
 * with the graph's `layer` stamp set, so every IR node knows which YAML line made it. */
#include "frontends/frontend.h"
#include "frontends/yamldoc.h"
#include <math.h>
#include <string.h>

typedef struct named {
  const char *name;
  gr_value *v;
  gr_loc loc;
} named;

/* The parameters of a block instance: name -> the YAML value it stands for. */
typedef struct binding {
  const char *name;
  gr_ynode *value;
} binding;

/* A namespace of layer names: the model's top level, a sequential group or a block instance.
 * Parameters made inside are named prefix + layer name (PyTorch's hierarchical state_dict keys). */
typedef struct scope {
  struct scope *parent;
  const char *prefix; /* "" or e.g. "layer1.0." */
  named *names;
  int n_names, cap_names;
  binding *binds;     /* a block instance's parameters; NULL: those of the enclosing block */
  int n_binds;
  const char *block;  /* the block instantiated here, for messages */
} scope;

typedef struct mctx {
  gr_ydoc *y;
  gr_graph *g;
  gr_model_mode mode;
  bool mode_dependent;
  scope *sc;
  gr_ynode *blocks;           /* the model's `blocks:` mapping, or NULL */
  const char **op_choices;    /* built-in ops, sequential and block names */
  int depth;
} mctx;

enum { MAX_DEPTH = 32 };

static const char *const layer_ops[] = {"linear", "conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "batchnorm", "layernorm", "embedding",
                                        "relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax", "dropout", "identity", "flatten",
                                        "reshape", "mean", "add", "mul", "concat", "sequential", "grad_reverse", NULL};
static const char *const common_keys[] = {"name", "op", "in", "when", "repeat"};
enum { N_COMMON = 5 };

static named *lookup(mctx *m, const char *name) {
  for (int i = 0; i < m->sc->n_names; i++)
    if (!strcmp(m->sc->names[i].name, name)) return &m->sc->names[i];
  return NULL;
}

static void define(mctx *m, const char *name, gr_value *v, gr_loc loc) {
  scope *s = m->sc;
  gr_grow(m->g->arena, (void **)&s->names, &s->cap_names, s->n_names + 1, sizeof *s->names);
  s->names[s->n_names++] = (named){name, v, loc};
}

/* The YAML substitution hook: a plain scalar `$p` stands for parameter p of the innermost block. */
static gr_ynode *subst_param(void *ctx, gr_ynode *n) {
  mctx *m = ctx;
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || n->data.scalar.value[0] != '$') return n;
  const char *p = (const char *)n->data.scalar.value + 1;
  scope *s = m->sc;
  while (s && !s->binds) s = s->parent;
  if (!s) {
    gr_error(m->y->diag, gr_yloc(m->y, n), "'$%s' names a block parameter, but this layer is not inside a block", p);
    return n;
  }
  for (int i = 0; i < s->n_binds; i++)
    if (!strcmp(s->binds[i].name, p)) return s->binds[i].value;
  gr_error(m->y->diag, gr_yloc(m->y, n), "block '%s' has no parameter '%s'", s->block, p);
  return n;
}

/* A parameter (or, if !trainable, a buffer) of the model: made by the first build, found by name
 * in the evaluation twin's. */
static gr_value *model_param(mctx *m, const char *name, gr_shape shape, float bound, float value, bool trainable, gr_loc loc) {
  for (int i = 0; m->mode == GR_MODE_EVAL && i < m->g->n_values; i++) {
    gr_value *v = m->g->values[i];
    if (v->role == GR_ROLE_PARAM && v->name && !strcmp(v->name, name)) {
      GR_CHECK(gr_shape_eq(&v->shape, &shape), "evaluation twin: parameter %s changed shape", name);
      return v;
    }
  }
  gr_value *v = trainable ? gr_param(m->g, name, shape, bound, loc) : gr_buffer(m->g, name, shape, value, loc);
  v->init_value = value;
  return v;
}

/* The keys a layer of `op` accepts: the common ones plus its own. */
static const char *const *keys_for(mctx *m, const char *op, gr_ynode *block) {
  static const char *const linear[] = {"out_features", "in_features", "bias", NULL};
  static const char *const flatten[] = {"start_dim", "end_dim", NULL};
  static const char *const conv[] = {"out_channels", "kernel_size", "in_channels", "stride", "padding", "dilation", "groups", "bias", NULL};
  static const char *const pool[] = {"kernel_size", "stride", "padding", NULL};
  static const char *const cat[] = {"dim", NULL};
  static const char *const drop[] = {"p", NULL};
  static const char *const bn[] = {"num_features", "eps", "momentum", "affine", NULL};
  static const char *const ln[] = {"normalized_shape", "eps", "elementwise_affine", NULL};
  static const char *const emb[] = {"num_embeddings", "embedding_dim", "padding_idx", NULL};
  static const char *const mean[] = {"dim", NULL};
  static const char *const reshape[] = {"shape", NULL};
  static const char *const none[] = {NULL};
  static const char *const seq[] = {"layers", NULL};
  const char **bkeys = NULL;
  if (block) { /* a block instance takes the block's parameters */
    gr_ynode *params = gr_yget(m->y, block, "params");
    int np = params && params->type == YAML_MAPPING_NODE ? (int)(params->data.mapping.pairs.top - params->data.mapping.pairs.start) : 0;
    bkeys = gr_alloc(m->g->arena, sizeof(char *) * (size_t)(np + 1));
    for (int i = 0; i < np; i++)
      bkeys[i] = (const char *)yaml_document_get_node(&m->y->doc, params->data.mapping.pairs.start[i].key)->data.scalar.value;
  }
  const char *const *own = block                      ? bkeys
                           : !strcmp(op, "sequential") ? seq
                           : !strcmp(op, "linear")    ? linear
                           : !strcmp(op, "flatten")   ? flatten
                           : !strcmp(op, "conv2d")    ? conv
                           : !strcmp(op, "maxpool2d") ? pool
                           : !strcmp(op, "avgpool2d") ? pool
                           : !strcmp(op, "concat")    ? cat
                           : !strcmp(op, "dropout")   ? drop
                           : !strcmp(op, "batchnorm") ? bn
                           : !strcmp(op, "layernorm") ? ln
                           : !strcmp(op, "embedding") ? emb
                           : !strcmp(op, "mean")      ? mean
                           : !strcmp(op, "reshape")   ? reshape
                                                      : none;
  int n = 0;
  while (own[n]) n++;
  const char **all = gr_alloc(m->g->arena, sizeof(char *) * (size_t)(n + N_COMMON + 1));
  for (int i = 0; i < N_COMMON; i++) all[i] = common_keys[i];
  for (int i = 0; i < n; i++) all[N_COMMON + i] = own[i];
  return all;
}

static gr_value *build_linear(mctx *m, gr_ynode *item, const char *name, gr_value *x, gr_loc loc) {
  gr_ydoc *y = m->y;
  int64_t out = 0, in_f = -1;
  bool bias = true;
  gr_ynode *o = gr_yreq(y, item, "out_features", "a linear layer");
  if (!o || !gr_yint(y, o, "'out_features'", 1, 1 << 24, &out)) return NULL;
  if (!gr_yopt_int(y, item, "in_features", 1, 1 << 24, &in_f) || !gr_yopt_bool(y, item, "bias", &bias)) return NULL;
  char sb[96];
  if (x->shape.rank != 2) {
    gr_error(y->diag, loc, "layer '%s': linear expects input of shape [N, features], got %s; add a flatten layer before it",
             name, gr_shape_str(&x->shape, sb, sizeof sb));
    return NULL;
  }
  int64_t in = x->shape.dim[1];
  if (in_f >= 0 && in_f != in) {
    gr_error(y->diag, gr_yloc(y, gr_yget(y, item, "in_features")),
             "layer '%s': in_features is %lld but its input has %lld features (shape %s)", name, (long long)in_f,
             (long long)in, gr_shape_str(&x->shape, sb, sizeof sb));
    return NULL;
  }
  /* PyTorch's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias */
  float bound = (float)(1.0 / sqrt((double)in));
  gr_value *w = model_param(m, gr_sprintf(m->g->arena, "%s.weight", name), gr_shape_make(2, (int64_t[]){out, in}), bound, 0, true, loc);
  gr_value *h = gr_matmul(m->g, x, w, 0, 1, loc); /* y = x W^T */
  if (bias) {
    gr_value *b = model_param(m, gr_sprintf(m->g->arena, "%s.bias", name), gr_shape_make(1, (int64_t[]){out}), bound, 0, true, loc);
    h = gr_binary(m->g, GR_OP_BIAS_ADD, h, b, loc);
  }
  return h;
}

/* An optional key holding one integer for both spatial dimensions, or a list [height, width]. */
static bool opt_pair(gr_ydoc *y, gr_ynode *item, const char *key, int64_t min, int64_t max, int64_t out[2]) {
  gr_ynode *v = gr_yget(y, item, key);
  if (!v) return true;
  const char *what = gr_sprintf(y->arena, "'%s'", key);
  if (v->type == YAML_SEQUENCE_NODE) {
    if (gr_ylist_len(v) != 2) {
      gr_error(y->diag, gr_yloc(y, v), "%s must be an integer or a list [height, width], got %s", what, gr_ydescribe(y, v));
      return false;
    }
    return gr_yint(y, gr_ylist_at(y, v, 0), what, min, max, &out[0]) && gr_yint(y, gr_ylist_at(y, v, 1), what, min, max, &out[1]);
  }
  if (!gr_yint(y, v, what, min, max, &out[0])) return false;
  out[1] = out[0];
  return true;
}

static bool need_4d(mctx *m, const char *name, const char *op, gr_value *x, gr_loc loc) {
  if (x->shape.rank == 4) return true;
  char sb[96];
  gr_error(m->y->diag, loc, "layer '%s': %s expects input of shape [N, channels, height, width], got %s", name, op,
           gr_shape_str(&x->shape, sb, sizeof sb));
  return false;
}

/* conv2d: out_channels, kernel_size (required); stride 1, padding 0, dilation 1, groups 1, bias true;
 * weight [out, in/groups, kh, kw] and bias [out], both U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as in PyTorch */
static gr_value *build_conv2d(mctx *m, gr_ynode *item, const char *name, gr_value *x, gr_loc loc) {
  gr_ydoc *y = m->y;
  int64_t out = 0, in_c = -1, groups = 1, k[2] = {0, 0};
  gr_attrs a = {.stride = {1, 1}, .dilation = {1, 1}};
  bool bias = true;
  gr_ynode *o = gr_yreq(y, item, "out_channels", "a conv2d layer"), *ks = gr_yreq(y, item, "kernel_size", "a conv2d layer");
  if (!o || !ks || !gr_yint(y, o, "'out_channels'", 1, 1 << 20, &out) || !opt_pair(y, item, "kernel_size", 1, 1024, k) ||
      !opt_pair(y, item, "stride", 1, 1024, a.stride) || !opt_pair(y, item, "padding", 0, 1024, a.pad) ||
      !opt_pair(y, item, "dilation", 1, 1024, a.dilation) || !gr_yopt_int(y, item, "groups", 1, 1 << 20, &groups) ||
      !gr_yopt_int(y, item, "in_channels", 1, 1 << 20, &in_c) || !gr_yopt_bool(y, item, "bias", &bias) ||
      !need_4d(m, name, "conv2d", x, loc))
    return NULL;
  int64_t cin = x->shape.dim[1];
  if (in_c >= 0 && in_c != cin) {
    gr_error(y->diag, gr_yloc(y, gr_yget(y, item, "in_channels")), "layer '%s': in_channels is %lld but its input has %lld channels",
             name, (long long)in_c, (long long)cin);
    return NULL;
  }
  if (cin % groups || out % groups) {
    gr_error(y->diag, gr_yloc(y, gr_yget(y, item, "groups")),
             "layer '%s': groups (%lld) must divide both the input channels (%lld) and out_channels (%lld)", name,
             (long long)groups, (long long)cin, (long long)out);
    return NULL;
  }
  a.groups = groups;
  float bound = (float)(1.0 / sqrt((double)(cin / groups * k[0] * k[1])));
  gr_value *w = model_param(m, gr_sprintf(m->g->arena, "%s.weight", name),
                            gr_shape_make(4, (int64_t[]){out, cin / groups, k[0], k[1]}), bound, 0, true, loc);
  gr_value *in[2] = {x, w};
  gr_value *h = gr_apply(m->g, GR_OP_CONV2D, in, 2, &a, loc);
  if (h && bias) {
    gr_value *b = model_param(m, gr_sprintf(m->g->arena, "%s.bias", name), gr_shape_make(1, (int64_t[]){out}), bound, 0, true, loc);
    h = gr_binary(m->g, GR_OP_BIAS_ADD, h, b, loc);
  }
  return h;
}

/* batchnorm: normalises each channel (dimension 1) over the batch and any spatial dimensions, as
 * torch.nn.BatchNorm1d/2d: num_features (checked), eps 1e-5, momentum 0.1, affine true. Parameters
 * <name>.weight (1) and <name>.bias (0); buffers <name>.running_mean (0), <name>.running_var (1) and
 * <name>.num_batches_tracked (0, counts training steps; a float here, int64 in PyTorch). */
static gr_value *build_batchnorm(mctx *m, gr_ynode *item, const char *name, gr_value *x, gr_loc loc) {
  gr_ydoc *y = m->y;
  int64_t nf = -1;
  double eps = 1e-5, mom = 0.1;
  bool affine = true;
  if (item && (!gr_yopt_int(y, item, "num_features", 1, 1 << 24, &nf) || !gr_yopt_float(y, item, "eps", 1e-12, 1, &eps) ||
               !gr_yopt_float(y, item, "momentum", 0, 1, &mom) || !gr_yopt_bool(y, item, "affine", &affine)))
    return NULL;
  char sb[96];
  if (x->shape.rank < 2) {
    gr_error(y->diag, loc, "layer '%s': batchnorm expects input [N, channels, ...], got %s", name, gr_shape_str(&x->shape, sb, sizeof sb));
    return NULL;
  }
  int64_t C = x->shape.dim[1];
  if (nf >= 0 && nf != C) {
    gr_error(y->diag, gr_yloc(y, gr_yget(y, item, "num_features")), "layer '%s': num_features is %lld but its input has %lld channels",
             name, (long long)nf, (long long)C);
    return NULL;
  }
  if (!affine) {
    gr_error(y->diag, gr_yloc(y, gr_yget(y, item, "affine")), "layer '%s': batchnorm without affine parameters is not supported yet", name);
    return NULL;
  }
  gr_shape cs = gr_shape_make(1, (int64_t[]){C});
  gr_arena *ar = m->g->arena;
  gr_value *in[6] = {x, model_param(m, gr_sprintf(ar, "%s.weight", name), cs, 0, 1, true, loc),
                     model_param(m, gr_sprintf(ar, "%s.bias", name), cs, 0, 0, true, loc),
                     model_param(m, gr_sprintf(ar, "%s.running_mean", name), cs, 0, 0, false, loc),
                     model_param(m, gr_sprintf(ar, "%s.running_var", name), cs, 0, 1, false, loc),
                     model_param(m, gr_sprintf(ar, "%s.num_batches_tracked", name), gr_shape_make(0, NULL), 0, 0, false, loc)};
  gr_attrs a = {.training = m->mode == GR_MODE_TRAIN, .bn_eps = eps, .bn_momentum = mom};
  m->mode_dependent = true;
  return gr_apply(m->g, GR_OP_BATCHNORM, in, 6, &a, loc);
}

/* A list of per-sample dimensions (`shape:`, `normalized_shape:`), or one integer; -1 is allowed once
 * if allow_infer (reshape). */
static bool dims_list(gr_ydoc *y, gr_ynode *v, const char *what, bool allow_infer, gr_shape *out) {
  bool list = v->type == YAML_SEQUENCE_NODE;
  int r = list ? gr_ylist_len(v) : 1;
  if (r < 1 || r > GR_MAX_RANK - 1) {
    gr_error(y->diag, gr_yloc(y, v), "%s must be an integer or a list of 1 to %d integers, got %s", what, GR_MAX_RANK - 1, gr_ydescribe(y, v));
    return false;
  }
  out->rank = r;
  int inferred = 0;
  for (int i = 0; i < r; i++) {
    gr_ynode *e = list ? gr_ylist_at(y, v, i) : v;
    if (!gr_yint(y, e, what, allow_infer ? -1 : 1, 1 << 24, &out->dim[i])) return false;
    if (out->dim[i] == 0 || (out->dim[i] < 0 && ++inferred > 1)) {
      gr_error(y->diag, gr_yloc(y, e), "%s: dimensions must be positive (one may be -1, inferred), got %lld", what, (long long)out->dim[i]);
      return false;
    }
  }
  return true;
}

/* layernorm: torch.nn.LayerNorm over each sample's trailing dimensions normalized_shape (default: the
 * last one), eps 1e-5; parameters <name>.weight (1) and <name>.bias (0) of that shape */
static gr_value *build_layernorm(mctx *m, gr_ynode *item, const char *name, gr_value *x, gr_loc loc) {
  gr_ydoc *y = m->y;
  double eps = 1e-5;
  bool affine = true;
  char sb[96], sb2[96];
  gr_ynode *ns = item ? gr_yget(y, item, "normalized_shape") : NULL;
  if (item && (!gr_yopt_float(y, item, "eps", 1e-12, 1, &eps) || !gr_yopt_bool(y, item, "elementwise_affine", &affine))) return NULL;
  int r = x->shape.rank;
  if (r < 2) {
    gr_error(y->diag, loc, "layer '%s': layernorm expects input [N, ...], got %s", name, gr_shape_str(&x->shape, sb, sizeof sb));
    return NULL;
  }
  gr_shape ps = gr_shape_make(1, &x->shape.dim[r - 1]);
  if (ns && !dims_list(y, ns, "'normalized_shape'", false, &ps)) return NULL;
  bool fits = ps.rank < r;
  for (int i = 0; fits && i < ps.rank; i++) fits = ps.dim[i] == x->shape.dim[r - ps.rank + i];
  if (!fits) {
    gr_error(y->diag, gr_yloc(y, ns), "layer '%s': normalized_shape %s is not the trailing dimensions of its input %s", name,
             gr_shape_str(&ps, sb2, sizeof sb2), gr_shape_str(&x->shape, sb, sizeof sb));
    return NULL;
  }
  if (!affine) {
    gr_error(y->diag, gr_ykey_loc(y, item, "elementwise_affine"), "layer '%s': layernorm without affine parameters is not supported yet", name);
    return NULL;
  }
  gr_arena *ar = m->g->arena;
  gr_value *in[3] = {x, model_param(m, gr_sprintf(ar, "%s.weight", name), ps, 0, 1, true, loc),
                     model_param(m, gr_sprintf(ar, "%s.bias", name), ps, 0, 0, true, loc)};
  return gr_apply(m->g, GR_OP_LAYERNORM, in, 3, &(gr_attrs){.bn_eps = eps}, loc);
}

/* embedding: torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx): integer indices
 * [N, ...] -> [N, ..., embedding_dim]; <name>.weight starts N(0, 1), the padding row 0 (it gets no
 * gradient; a negative padding_idx counts from the end) */
static gr_value *build_embedding(mctx *m, gr_ynode *item, const char *name, gr_value *x, gr_loc loc) {
  gr_ydoc *y = m->y;
  int64_t V = 0, D = 0, pad = INT64_MIN;
  gr_ynode *vn = gr_yreq(y, item, "num_embeddings", "an embedding layer"), *dn = gr_yreq(y, item, "embedding_dim", "an embedding layer");
  if (!vn || !dn || !gr_yint(y, vn, "'num_embeddings'", 1, 1 << 24, &V) || !gr_yint(y, dn, "'embedding_dim'", 1, 1 << 20, &D) ||
      !gr_yopt_int(y, item, "padding_idx", -(1 << 24), 1 << 24, &pad))
    return NULL;
  char sb[96];
  if (x->dtype != GR_I32) {
    gr_error(y->diag, loc, "layer '%s': embedding expects integer indices (an input with 'dtype: int32'), got %s %s", name,
             gr_dtype_name[x->dtype], gr_shape_str(&x->shape, sb, sizeof sb));
    return NULL;
  }
  gr_attrs a = {0};
  if (pad != INT64_MIN) {
    if (pad < -V || pad >= V) {
      gr_error(y->diag, gr_yloc(y, gr_yget(y, item, "padding_idx")), "layer '%s': padding_idx %lld is outside the %lld embeddings",
               name, (long long)pad, (long long)V);
      return NULL;
    }
    a.has_pad = 1;
    a.pad_idx = pad < 0 ? pad + V : pad;
  }
  if (V * D > (int64_t)1 << 28) {
    gr_error(y->diag, loc, "layer '%s': an embedding table of %lld x %lld values is too large", name, (long long)V, (long long)D);
    return NULL;
  }
  gr_value *w = model_param(m, gr_sprintf(m->g->arena, "%s.weight", name), gr_shape_make(2, (int64_t[]){V, D}), 0, 0, true, loc);
  w->init_std = 1;
  w->zero_row = a.has_pad ? a.pad_idx : -1;
  gr_value *in[2] = {x, w};
  return gr_apply(m->g, GR_OP_EMBEDDING, in, 2, &a, loc);
}

/* mean: the mean along dim (default 1; negative counts from the end; not 0, the batch), which is
 * removed: [N, T, D] -> [N, D] pools a sequence (torch.mean(x, dim)) */
static gr_value *build_mean(mctx *m, gr_ynode *item, const char *name, gr_value *x, gr_loc loc) {
  gr_ydoc *y = m->y;
  int64_t dim = 1;
  if (item && !gr_yopt_int(y, item, "dim", -GR_MAX_RANK, GR_MAX_RANK, &dim)) return NULL;
  int r = x->shape.rank;
  if (dim < 0) dim += r;
  if (dim < 1 || dim >= r) {
    gr_error(y->diag, item && gr_yget(y, item, "dim") ? gr_yloc(y, gr_yget(y, item, "dim")) : loc,
             "layer '%s': mean over dim %lld does not fit an input of rank %d (dimension 0 is the batch)", name, (long long)dim, r);
    return NULL;
  }
  return gr_apply(m->g, GR_OP_MEAN, &x, 1, &(gr_attrs){.axis = (int)dim}, loc);
}

/* reshape: shape (required) is the per-sample shape, one dimension may be -1 (inferred), as
 * x.view(N, *shape); the values are not moved */
static gr_value *build_reshape(mctx *m, gr_ynode *item, const char *name, gr_value *x, gr_loc loc) {
  gr_ydoc *y = m->y;
  gr_ynode *sn = gr_yreq(y, item, "shape", "a reshape layer");
  gr_shape t;
  if (!sn || !dims_list(y, sn, "'shape'", true, &t)) return NULL;
  int64_t known = 1, per = gr_shape_inner(&x->shape);
  int infer = -1;
  for (int i = 0; i < t.rank; i++) {
    if (t.dim[i] < 0)
      infer = i;
    else
      known *= t.dim[i];
  }
  char sb[96], tb[96];
  if ((infer >= 0 && per % known) || (infer < 0 && known != per)) {
    int k = snprintf(tb, sizeof tb, "[");
    for (int i = 0; i < t.rank; i++) k += snprintf(tb + k, sizeof tb - (size_t)k, "%s%lld", i ? ", " : "", (long long)t.dim[i]);
    snprintf(tb + k, sizeof tb - (size_t)k, "]");
    gr_error(y->diag, gr_yloc(y, sn), "layer '%s': cannot reshape its input %s (%lld values per sample) to %s", name,
             gr_shape_str(&x->shape, sb, sizeof sb), (long long)per, tb);
    return NULL;
  }
  if (infer >= 0) t.dim[infer] = per / known;
  gr_shape s = {.rank = t.rank + 1};
  s.dim[0] = GR_BATCH;
  for (int i = 0; i < t.rank; i++) s.dim[i + 1] = t.dim[i];
  return gr_reshape(m->g, x, s, loc);
}

/* maxpool2d, avgpool2d: kernel_size (required), stride (default: kernel_size), padding 0;
 * avgpool2d divides by the whole window, padding included (PyTorch's count_include_pad) */
static gr_value *build_pool2d(mctx *m, gr_op op, gr_ynode *item, const char *name, gr_value *x, gr_loc loc) {
  gr_ydoc *y = m->y;
  gr_attrs a = {.kernel = {0, 0}};
  gr_ynode *ks = gr_yreq(y, item, "kernel_size", gr_sprintf(y->arena, "a %s layer", gr_ops[op].name));
  if (!ks || !opt_pair(y, item, "kernel_size", 1, 1024, a.kernel)) return NULL;
  a.stride[0] = a.kernel[0];
  a.stride[1] = a.kernel[1];
  if (!opt_pair(y, item, "stride", 1, 1024, a.stride) || !opt_pair(y, item, "padding", 0, 1024, a.pad) ||
      !need_4d(m, name, gr_ops[op].name, x, loc))
    return NULL;
  return gr_apply(m->g, op, &x, 1, &a, loc);
}

static gr_value *build_flatten(mctx *m, gr_ynode *item, const char *name, gr_value *x, gr_loc loc) {
  gr_ydoc *y = m->y;
  int64_t start = 1, end = -1;
  if (item && (!gr_yopt_int(y, item, "start_dim", -GR_MAX_RANK, GR_MAX_RANK, &start) ||
               !gr_yopt_int(y, item, "end_dim", -GR_MAX_RANK, GR_MAX_RANK, &end)))
    return NULL;
  int r = x->shape.rank;
  if (start < 0) start += r;
  if (end < 0) end += r;
  if (start < 1 || end >= r || start > end) {
    gr_error(y->diag, loc, "layer '%s': flatten dims %lld..%lld do not fit an input of rank %d (dimension 0 is the batch)",
             name, (long long)start, (long long)end, r);
    return NULL;
  }
  gr_shape s = {.rank = 0};
  for (int i = 0; i < r; i++) {
    if (i > start && i <= end)
      s.dim[s.rank - 1] *= x->shape.dim[i];
    else
      s.dim[s.rank++] = x->shape.dim[i];
  }
  return gr_reshape(m->g, x, s, loc);
}

/* The layers that are one elementwise or row-wise IR op with no keys; GR_OP_COUNT for other names. */
static gr_op unary_op(const char *op) {
  static const struct {
    const char *name;
    gr_op op;
  } table[] = {{"relu", GR_OP_RELU}, {"sigmoid", GR_OP_SIGMOID}, {"tanh", GR_OP_TANH},
               {"gelu", GR_OP_GELU}, {"softmax", GR_OP_SOFTMAX}, {"log_softmax", GR_OP_LOG_SOFTMAX},
               {"grad_reverse", GR_OP_GRAD_REVERSE}};
  for (size_t i = 0; i < sizeof table / sizeof *table; i++)
    if (!strcmp(table[i].name, op)) return table[i].op;
  return GR_OP_COUNT;
}

/* One layer item: a scalar op name, or a mapping. Returns false after reporting. */
static bool build_sequence(mctx *m, gr_ynode *layers, gr_value *x, const char *what, gr_value **out);
static gr_value *build_block(mctx *m, gr_ynode *item, gr_ynode *block, const char *op, const char *full, gr_value *x, gr_loc loc);

static bool build_layer(mctx *m, gr_ynode *item, int index, gr_value *prev, const char **op_out) {
  gr_ydoc *y = m->y;
  gr_loc loc = gr_yloc(y, item);
  const char *op = NULL, *name = NULL;
  gr_ynode *map = NULL, *block = NULL;
  if (item->type == YAML_SCALAR_NODE) {
    int k;
    if (!gr_yenum(y, item, "op", m->op_choices, &k)) return false;
    op = m->op_choices[k];
  } else if (item->type == YAML_MAPPING_NODE) {
    map = item;
    gr_ynode *opn = gr_yreq(y, map, "op", "a layer");
    if (!opn) return false;
    int k;
    if (!gr_yenum(y, opn, "op", m->op_choices, &k)) return false;
    op = m->op_choices[k];
    block = m->blocks ? gr_yget(y, m->blocks, op) : NULL;
    if (!gr_ymap_check(y, map, gr_sprintf(y->arena, "a%s %s layer", strchr("aeiou", op[0]) ? "n" : "", op), keys_for(m, op, block)))
      return false;
    gr_ynode *nn = gr_yget(y, map, "name");
    if (nn) {
      if (!gr_ystr(y, nn, "'name'", &name)) return false;
      if (!*name || strchr(name, ' ')) {
        gr_error(y->diag, gr_yloc(y, nn), "layer names must be non-empty and contain no spaces");
        return false;
      }
    }
  } else {
    gr_error(y->diag, loc, "a layer must be an op name or a mapping, got %s", gr_ydescribe(y, item));
    return false;
  }
  if (!name) name = gr_sprintf(y->arena, "%d", index);
  if (!map) block = m->blocks ? gr_yget(y, m->blocks, op) : NULL;
  const char *full = gr_sprintf(y->arena, "%s%s", m->sc->prefix, name); /* the PyTorch-style name */
  named *dup = lookup(m, name);
  if (dup) {
    gr_error(y->diag, map && gr_yget(y, map, "name") ? gr_yloc(y, gr_yget(y, map, "name")) : loc,
             "layer name '%s' is already used", name);
    gr_note(y->diag, dup->loc, "'%s' is defined here", name);
    return false;
  }
  gr_value *x = prev;
  /* inputs: `in` names one earlier layer (or the input), or for joins a list of them */
  bool join = !strcmp(op, "add") || !strcmp(op, "mul") || !strcmp(op, "concat");
  gr_ynode *in = map ? gr_yget(y, map, "in") : NULL;
  gr_value *xs[64];
  int nx = 0;
  if (join && (!in || in->type != YAML_SEQUENCE_NODE || gr_ylist_len(in) < 2 || gr_ylist_len(in) > 64)) {
    gr_error(y->diag, in ? gr_yloc(y, in) : loc, "a%s %s layer needs 'in': a list of 2 to 64 layers to join, like [a, b]",
             op[0] == 'a' ? "n" : "", op);
    return false;
  }
  if (in && !join && in->type == YAML_SEQUENCE_NODE) {
    gr_error(y->diag, gr_yloc(y, in), "a %s layer takes one input; 'in' must name one layer", op);
    return false;
  }
  for (int k = 0; in && k < (join ? gr_ylist_len(in) : 1); k++) {
    gr_ynode *r = join ? gr_ylist_at(y, in, k) : in;
    const char *ref;
    if (!gr_ystr(y, r, "'in'", &ref)) return false;
    named *src = lookup(m, ref);
    if (!src) {
      const char **cands = gr_alloc(y->arena, sizeof(char *) * (size_t)(m->sc->n_names + 1));
      for (int i = 0; i < m->sc->n_names; i++) cands[i] = m->sc->names[i].name;
      const char *sug = gr_suggest(ref, cands);
      if (sug)
        gr_error(y->diag, gr_yloc(y, r), "unknown layer '%s' (did you mean '%s'?)", ref, sug);
      else
        gr_error(y->diag, gr_yloc(y, r), "unknown layer '%s'; 'in' must name the input or an earlier layer", ref);
      return false;
    }
    xs[nx++] = src->v;
  }
  if (in && !join) x = xs[0];
  *op_out = op;
  /* when: false leaves the layer out: it passes its input through */
  bool when = true;
  int64_t repeat = 1;
  if (map && (!gr_yopt_bool(y, map, "when", &when) || !gr_yopt_int(y, map, "repeat", 1, 1024, &repeat))) return false;
  if (!when) {
    define(m, name, join ? xs[0] : x, loc);
    return true;
  }
  bool repeated = map && gr_yget(y, map, "repeat"); /* repeat: n (even 1) names the copies <name>.0, ... */
  if (repeated && !block) {
    gr_error(y->diag, gr_ykey_loc(y, map, "repeat"), "'repeat' applies to block layers (it makes <name>.0, <name>.1, ...)");
    return false;
  }
  if (!strcmp(op, "sequential") || block) {
    gr_value *out = NULL;
    if (block && repeated) { /* copies <full>.0 .. <full>.<r-1>, each feeding the next */
      scope s = {.parent = m->sc, .prefix = gr_sprintf(y->arena, "%s.", full)};
      m->sc = &s;
      out = x;
      for (int64_t i = 0; i < repeat && out; i++)
        out = build_block(m, map, block, op, gr_sprintf(y->arena, "%s.%lld", full, (long long)i), out, loc);
      m->sc = s.parent;
    } else if (block) {
      out = build_block(m, map, block, op, full, x, loc);
    } else {
      gr_ynode *ls = map ? gr_yreq(y, map, "layers", "a sequential layer") : NULL;
      if (!map) gr_error(y->diag, loc, "a sequential layer needs 'layers': write it as a mapping");
      if (!ls) return false;
      scope s = {.parent = m->sc, .prefix = gr_sprintf(y->arena, "%s.", full)};
      m->sc = &s;
      define(m, "input", x, loc);
      bool ok = build_sequence(m, ls, x, "'layers'", &out);
      m->sc = s.parent;
      if (!ok) out = NULL;
    }
    if (!out) return false;
    define(m, name, out, loc);
    return true;
  }
  const char *local = name;
  name = full; /* parameters and messages use the full name from here on */
  m->g->layer = name;
  gr_value *out = NULL;
  if (!strcmp(op, "linear")) {
    if (!map) {
      gr_error(y->diag, loc, "a linear layer needs keys: write it as a mapping with 'out_features'");
      return false;
    }
    out = build_linear(m, map, name, x, loc);
  } else if (!strcmp(op, "conv2d") || !strcmp(op, "maxpool2d") || !strcmp(op, "avgpool2d")) {
    if (!map) {
      gr_error(y->diag, loc, "a %s layer needs keys: write it as a mapping with %s", op,
               !strcmp(op, "conv2d") ? "'out_channels' and 'kernel_size'" : "'kernel_size'");
      return false;
    }
    out = !strcmp(op, "conv2d")      ? build_conv2d(m, map, name, x, loc)
          : !strcmp(op, "maxpool2d") ? build_pool2d(m, GR_OP_MAXPOOL2D, map, name, x, loc)
                                     : build_pool2d(m, GR_OP_AVGPOOL2D, map, name, x, loc);
  } else if (!strcmp(op, "global_avgpool")) { /* the mean over H and W: [N, C, 1, 1] */
    if (!need_4d(m, name, op, x, loc)) return false;
    gr_attrs a = {.kernel = {x->shape.dim[2], x->shape.dim[3]}, .stride = {1, 1}};
    out = gr_apply(m->g, GR_OP_AVGPOOL2D, &x, 1, &a, loc);
  } else if (!strcmp(op, "batchnorm")) {
    out = build_batchnorm(m, map, name, x, loc);
  } else if (!strcmp(op, "flatten")) {
    out = build_flatten(m, map, name, x, loc);
  } else if (!strcmp(op, "layernorm")) {
    out = build_layernorm(m, map, name, x, loc);
  } else if (!strcmp(op, "mean")) {
    out = build_mean(m, map, name, x, loc);
  } else if (!strcmp(op, "embedding") || !strcmp(op, "reshape")) {
    if (!map) {
      gr_error(y->diag, loc, "a%s %s layer needs keys: write it as a mapping with %s", op[0] == 'e' ? "n" : "", op,
               op[0] == 'e' ? "'num_embeddings' and 'embedding_dim'" : "'shape'");
      return false;
    }
    out = op[0] == 'e' ? build_embedding(m, map, name, x, loc) : build_reshape(m, map, name, x, loc);
  } else if (!strcmp(op, "add") || !strcmp(op, "mul")) {
    out = xs[0]; /* a sum (product) of all inputs, left to right */
    for (int k = 1; k < nx && out; k++) out = gr_binary(m->g, op[0] == 'a' ? GR_OP_ADD : GR_OP_MUL, out, xs[k], loc);
  } else if (!strcmp(op, "concat")) {
    int64_t dim = 1;
    if (!gr_yopt_int(y, map, "dim", 1, GR_MAX_RANK - 1, &dim)) return false;
    out = xs[0];
    for (int k = 1; k < nx && out; k++) {
      gr_attrs a = {.axis = (int)dim};
      gr_value *pair[2] = {out, xs[k]};
      out = gr_apply(m->g, GR_OP_CONCAT, pair, 2, &a, loc);
    }
  } else if (unary_op(op) != GR_OP_COUNT) {
    out = gr_unary(m->g, unary_op(op), x, loc);
  } else if (!strcmp(op, "dropout")) { /* training: zero with probability p, scale by 1/(1-p); evaluation: identity */
    double p = 0.5;
    if (map && !gr_yopt_float(y, map, "p", 0, 0.999, &p)) return false;
    m->mode_dependent = true;
    if (m->mode == GR_MODE_EVAL || p == 0) {
      out = x;
    } else {
      gr_attrs a = {.drop_p = p, .salt = m->g->n_nodes};
      out = gr_apply(m->g, GR_OP_DROPOUT, &x, 1, &a, loc);
    }
  } else if (!strcmp(op, "identity")) {
    out = x;
  } else {
    GR_CHECK(0, "layer op '%s' listed but not built", op);
  }
  m->g->layer = NULL;
  if (!out) return false;
  define(m, local, out, loc);
  return true;
}

/* A list of layers in the current scope, starting from x; *out is the last one's output. */
static bool build_sequence(mctx *m, gr_ynode *layers, gr_value *x, const char *what, gr_value **out) {
  gr_ydoc *y = m->y;
  int nl = gr_ylist_len(layers);
  if (nl <= 0) {
    gr_error(y->diag, gr_yloc(y, layers), "%s must be a non-empty list of layers, got %s", what, gr_ydescribe(y, layers));
    return false;
  }
  gr_value *prev = x;
  for (int i = 0; i < nl; i++) {
    const char *op;
    if (!build_layer(m, gr_ylist_at(y, layers, i), i, prev, &op)) return false;
    prev = m->sc->names[m->sc->n_names - 1].v;
  }
  *out = prev;
  return true;
}

/* An instance of a block: its parameters bound to the layer's keys (or the block's defaults), its
 * layers built in a new scope named `full`; the output is the last layer's, or the block's `output`. */
static gr_value *build_block(mctx *m, gr_ynode *item, gr_ynode *block, const char *op, const char *full, gr_value *x, gr_loc loc) {
  gr_ydoc *y = m->y;
  if (m->depth >= MAX_DEPTH) {
    gr_error(y->diag, loc, "blocks nest deeper than %d levels (does block '%s' use itself?)", MAX_DEPTH, op);
    return NULL;
  }
  gr_ynode *params = gr_yget(y, block, "params");
  int np = params ? (int)(params->data.mapping.pairs.top - params->data.mapping.pairs.start) : 0;
  scope s = {.parent = m->sc, .prefix = gr_sprintf(y->arena, "%s.", full), .block = op};
  s.binds = gr_alloc(y->arena, sizeof(binding) * (size_t)(np + 1));
  for (int i = 0; i < np; i++) { /* arguments are resolved in the caller's scope */
    yaml_node_pair_t *pr = &params->data.mapping.pairs.start[i];
    const char *pn = (const char *)yaml_document_get_node(&y->doc, pr->key)->data.scalar.value;
    gr_ynode *v = item ? gr_yget(y, item, pn) : NULL;
    if (!v) v = yaml_document_get_node(&y->doc, pr->value);
    if (v->type == YAML_SCALAR_NODE && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        (!v->data.scalar.length || !strcmp((char *)v->data.scalar.value, "~") || !strcmp((char *)v->data.scalar.value, "null"))) {
      gr_error(y->diag, loc, "block '%s' needs a value for its parameter '%s'", op, pn);
      return NULL;
    }
    s.binds[s.n_binds++] = (binding){pn, v};
  }
  m->sc = &s;
  m->depth++;
  define(m, "input", x, loc);
  gr_value *out = NULL;
  bool ok = build_sequence(m, gr_yget(y, block, "layers"), x, gr_sprintf(y->arena, "the layers of block '%s'", op), &out);
  gr_ynode *on = ok ? gr_yget(y, block, "output") : NULL;
  if (on) {
    const char *oname;
    named *o = gr_ystr(y, on, "'output'", &oname) ? lookup(m, oname) : NULL;
    if (!o && oname) gr_error(y->diag, gr_yloc(y, on), "unknown layer '%s' in the output of block '%s'", oname, op);
    out = o ? o->v : NULL;
  }
  m->depth--;
  m->sc = s.parent;
  return ok ? out : NULL;
}

static const char *const model_keys[] = {"name", "input", "blocks", "layers", "output", NULL};
static const char *const block_keys[] = {"params", "layers", "output", NULL};

/* blocks: {NAME: {params: {p: default or ~ for required, ...}, layers: [...], output: layer}} —
 * checked here; the layers are checked where the block is used. */
static bool check_blocks(mctx *m, gr_ynode *blocks) {
  gr_ydoc *y = m->y;
  if (blocks->type != YAML_MAPPING_NODE) {
    gr_error(y->diag, gr_yloc(y, blocks), "'blocks' must be a mapping of block names to blocks, got %s", gr_ydescribe(y, blocks));
    return false;
  }
  int nb = (int)(blocks->data.mapping.pairs.top - blocks->data.mapping.pairs.start), n = 0, nbuiltin;
  const char **choices = gr_alloc(m->g->arena, sizeof(char *) * (size_t)(nb + sizeof layer_ops / sizeof *layer_ops + 1));
  for (const char *const *o = layer_ops; *o; o++) choices[n++] = *o;
  nbuiltin = n;
  for (int i = 0; i < nb; i++) {
    gr_ynode *k = yaml_document_get_node(&y->doc, blocks->data.mapping.pairs.start[i].key);
    gr_ynode *b = yaml_document_get_node(&y->doc, blocks->data.mapping.pairs.start[i].value);
    if (k->type != YAML_SCALAR_NODE) {
      gr_error(y->diag, gr_yloc(y, k), "block names must be plain words, got %s", gr_ydescribe(y, k));
      return false;
    }
    const char *bn = (const char *)k->data.scalar.value;
    for (int j = 0; j < n; j++)
      if (!strcmp(choices[j], bn)) {
        gr_error(y->diag, gr_yloc(y, k), "block name '%s' is %s", bn, j < nbuiltin ? "a built-in layer op" : "defined twice");
        return false;
      }
    const char *what = gr_sprintf(y->arena, "block '%s'", bn);
    if (!gr_ymap_check(y, b, what, block_keys) || !gr_yreq(y, b, "layers", what)) return false;
    gr_ynode *ps = gr_yget(y, b, "params");
    if (ps && ps->type != YAML_MAPPING_NODE) {
      gr_error(y->diag, gr_yloc(y, ps), "the params of block '%s' must be a mapping of names to default values (~: required), got %s",
               bn, gr_ydescribe(y, ps));
      return false;
    }
    choices[n++] = gr_strdup(m->g->arena, bn); /* outlives the YAML document */
  }
  choices[n] = NULL;
  m->op_choices = choices;
  m->blocks = blocks;
  return true;
}
bool gr_model_head(const char *path, const char *section, const char *key, const char *prefix, gr_graph *g, gr_model_mode mode,
                   gr_value *x, gr_value **out, gr_loc *loc) {
  gr_ydoc y;
  *out = NULL;
  if (!gr_ydoc_load(&y, path, (gr_loc){0}, g->diag, g->arena)) {
    gr_ydoc_free(&y);
    return false;
  }
  scope top = {.prefix = prefix};
  mctx m = {.y = &y, .g = g, .mode = mode, .sc = &top, .op_choices = (const char **)layer_ops};
  y.subst = subst_param;
  y.subst_ctx = &m;
  gr_ynode *sec = gr_yget(&y, gr_yroot(&y), section), *layers = sec ? gr_yget(&y, sec, key) : NULL;
  GR_CHECK(layers != NULL, "%s has no %s.%s (the plan frontend checked it)", path, section, key);
  define(&m, "input", x, gr_yloc(&y, layers));
  bool ok = build_sequence(&m, layers, x, gr_sprintf(g->arena, "'%s'", key), out);
  if (ok) *loc = top.names[top.n_names - 1].loc;
  gr_ydoc_free(&y);
  return ok;
}

static const char *const input_keys[] = {"shape", "name", "dtype", NULL};
static const char *const input_dtypes[] = {"float32", "int32", NULL};

bool gr_model_load(const char *path, gr_loc from, gr_graph *g, gr_model_mode mode, gr_model *out) {
  memset(out, 0, sizeof *out);
  gr_ydoc y;
  if (!gr_ydoc_load(&y, path, from, g->diag, g->arena)) {
    gr_ydoc_free(&y);
    return false;
  }
  int errors0 = g->diag->n_errors;
  scope top = {.prefix = ""};
  mctx m = {.y = &y, .g = g, .mode = mode, .sc = &top, .op_choices = NULL};
  m.op_choices = (const char **)layer_ops;
  y.subst = subst_param;
  y.subst_ctx = &m;
  gr_ynode *root = gr_yroot(&y);
  bool ok = gr_ymap_check(&y, root, "the model", model_keys);
  out->path = y.path;
  if (root->type != YAML_MAPPING_NODE) goto done; /* reported; its keys would only be "missing" */
  const char *base = strrchr(path, '/');
  out->name = base ? base + 1 : path;
  gr_ynode *n = gr_yget(&y, root, "name");
  if (n) ok &= gr_ystr(&y, n, "'name'", &out->name);

  gr_ynode *blocks = ok ? gr_yget(&y, root, "blocks") : NULL;
  if (blocks && !check_blocks(&m, blocks)) goto done;
  gr_ynode *inp = gr_yreq(&y, root, "input", "the model");
  gr_ynode *layers = gr_yreq(&y, root, "layers", "the model");
  if (!inp || !layers || !ok) goto done;
  if (!gr_ymap_check(&y, inp, "'input'", input_keys)) goto done;
  gr_ynode *shp = gr_yreq(&y, inp, "shape", "'input'");
  if (!shp) goto done;
  int rank = gr_ylist_len(shp);
  if (rank < 1 || rank > GR_MAX_RANK - 1) {
    gr_error(y.diag, gr_yloc(&y, shp), "'shape' must be a list of 1 to %d positive integers (the batch dimension is implicit), got %s",
             GR_MAX_RANK - 1, gr_ydescribe(&y, shp));
    goto done;
  }
  gr_shape s = {.rank = rank + 1};
  s.dim[0] = GR_BATCH;
  int64_t numel = 1;
  for (int i = 0; i < rank; i++) {
    if (!gr_yint(&y, gr_ylist_at(&y, shp, i), "a dimension of 'shape'", 1, 1 << 24, &s.dim[i + 1])) goto done;
    numel *= s.dim[i + 1]; /* at most 2^24 * 2^24: no overflow */
    if (numel > 1 << 24) {
      gr_error(y.diag, gr_yloc(&y, shp), "'shape' has more than %d values per sample", 1 << 24);
      goto done;
    }
  }
  const char *in_name = "input";
  gr_ynode *inn = gr_yget(&y, inp, "name");
  if (inn && !gr_ystr(&y, inn, "'name'", &in_name)) goto done;
  out->input_loc = gr_yloc(&y, inp);
  for (int i = 0; mode == GR_MODE_EVAL && i < g->n_values; i++) /* the evaluation twin reads the same input */
    if (g->values[i]->role == GR_ROLE_INPUT && g->values[i]->name && !strcmp(g->values[i]->name, in_name)) out->input = g->values[i];
  int dtk = 0; /* float32 samples, or int32 indices for embeddings */
  gr_ynode *dtn = gr_yget(&y, inp, "dtype");
  if (dtn && !gr_yenum(&y, dtn, "dtype", input_dtypes, &dtk)) goto done;
  if (!out->input) out->input = gr_input(g, in_name, dtk ? GR_I32 : g->fdtype, s, out->input_loc);
  define(&m, in_name, out->input, out->input_loc);

  int nl = gr_ylist_len(layers);
  if (nl <= 0) {
    gr_error(y.diag, gr_yloc(&y, layers), "'layers' must be a non-empty list, got %s", gr_ydescribe(&y, layers));
    goto done;
  }
  out->layer_names = gr_alloc(g->arena, sizeof(char *) * (size_t)nl);
  out->layer_locs = gr_alloc(g->arena, sizeof(gr_loc) * (size_t)nl);
  out->layer_ops = gr_alloc(g->arena, sizeof(char *) * (size_t)nl);
  out->layer_outputs = gr_alloc(g->arena, sizeof(gr_value *) * (size_t)nl);
  gr_value *prev = out->input;
  for (int i = 0; i < nl; i++) {
    const char *op = NULL;
    if (!build_layer(&m, gr_ylist_at(&y, layers, i), i, prev, &op)) goto done;
    named *last = &top.names[top.n_names - 1];
    prev = last->v;
    out->layer_names[i] = last->name;
    out->layer_ops[i] = op;
    out->layer_outputs[i] = last->v;
    out->layer_locs[i] = last->loc;
    out->n_layers++;
  }
  out->output = prev;
  out->output_loc = top.names[top.n_names - 1].loc;
  gr_ynode *on = gr_yget(&y, root, "output");
  if (on) {
    const char *oname;
    if (!gr_ystr(&y, on, "'output'", &oname)) goto done;
    named *o = lookup(&m, oname);
    if (!o) {
      gr_error(y.diag, gr_yloc(&y, on), "unknown layer '%s' in 'output'", oname);
      goto done;
    }
    out->output = o->v;
    out->output_loc = gr_yloc(&y, on);
  }
done:
  out->mode_dependent = m.mode_dependent;
  gr_ydoc_free(&y);
  return g->diag->n_errors == errors0 && out->output != NULL;
}
