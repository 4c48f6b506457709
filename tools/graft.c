/* graft.c — the driver. `graft check|ir|train|eval|predict|compile PLAN [options]`: compile a plan and
 * show it, dump its IR after any pass, train, evaluate or run it, or compile it ahead of time. Exit status: 0 success, 1 a diagnosed error in the input or run,
 * 2 a command-line usage error. */
#include "compiler/compiler.h"
#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
  fputs("usage: graft <command> PLAN [options]\n"
        "\n"
        "commands:\n"
        "  check PLAN           validate the plan and its model; print layers, parameters, FLOPs and memory\n"
        "  ir PLAN              print the IR (default: after memplan)\n"
        "      --after=PASS     print it after PASS: frontend, freeze, fold, loss, autodiff, optimizer,\n"
        "                       fuse (the kernels, with the nodes fused into each), memplan, codegen\n"
        "                       (the optimised LLVM IR)\n"
        "      --dot            write the training program as Graphviz: frozen, trained, cached, backward\n"
        "                       and update nodes drawn differently (graft ir PLAN --dot | dot -Tsvg)\n"
        "  train PLAN           train, evaluating on the test data after every epoch\n"
        "      --epochs N       override the plan's epochs\n"
        "      --seed N         override the plan's seed\n"
        "      --metrics FILE   write JSON-lines metrics to FILE\n"
        "      --threads N      threads for the kernels and GEMMs (default: every core)\n"
        "      --save FILE      write the trained parameters to FILE (safetensors)\n"
        "      --resume PATH    continue the run from a checkpoint: a file, or the newest good one in a directory\n"
        "      -q, --quiet      no progress line\n"
        "  eval PLAN            evaluate the model on the plan's test data\n"
        "      --weights FILE   parameters to evaluate (default: the plan's init)\n"
        "      --split S        test (default), train, or target (domain adaptation's target test data)\n"
        "      --output FILE    write the model's outputs for every sample to FILE (safetensors 'output')\n"
        "      --metrics FILE   write the evaluation record to FILE\n"
        "      --threads N      threads for the kernels and GEMMs (default: every core)\n"
        "  predict PLAN INPUT...  the model's top classes for every sample of INPUT (an IDX image file, or a\n"
        "                       tensors file with x, as the plan's data format; for image folders, any\n"
        "                       number of PNG/JPEG files or folders of them)\n"
        "      --weights FILE   parameters to use (default: the plan's init)\n"
        "      --top K          classes per sample (default 5)\n"
        "      --threads N      threads for the kernels and GEMMs (default: every core)\n"
        "  compile PLAN -o DIR  compile the plan ahead of time into DIR/<name>.o, DIR/lib<name>.a and the\n"
        "                       header DIR/<name>.h, for C programs that train or predict through graft.h\n"
        "                       with graft's runtime library only (no LLVM, no YAML files)\n"
        "      -o, --output DIR the output directory (created if missing)\n"
        "      --name NAME      the C name of the artifact (default: the model's name)\n"
        "      --target-cpu CPU the CPU to compile for, as LLVM names it (e.g. x86-64-v3 for any AVX2\n"
        "                       machine, x86-64-v4 for AVX-512; default: this machine's)\n"
        "      --target-features F  LLVM feature string, e.g. +avx2,+fma (default: the CPU's own)\n"
        "\n"
        "  train, eval and predict keep the compiled kernels in a cache on disk, so that the next run of\n"
        "  the same plan skips LLVM's optimisation and code generation:\n"
        "      --cache-dir DIR  the kernel cache (default: $GRAFT_CACHE_DIR, else $XDG_CACHE_HOME/graft,\n"
        "                       else ~/.cache/graft)\n"
        "      --no-cache       compile everything, and neither read nor write the cache\n"
        "\n"
        "  graft --help | --version\n",
        f);
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "graft: error: ");
  fprintf(stderr, fmt, arg);
  fputs("\n(run 'graft --help' for usage)\n", stderr);
  return 2;
}

/* Parses "--name=value" or "--name value"; returns the value or NULL if argv[*i] is not --name. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, bool *missing) {
  size_t len = strlen(name);
  const char *a = argv[*i];
  if (strncmp(a, name, len) != 0) return NULL;
  if (a[len] == '=') return a + len + 1;
  if (a[len] != 0) return NULL;
  if (*i + 1 >= argc) {
    *missing = true;
    return NULL;
  }
  return argv[++*i];
}

static bool parse_int(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end || errno || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static void human_bytes(char *buf, size_t n, double b) {
  if (b >= 1 << 20)
    snprintf(buf, n, "%.1f MiB", b / (1 << 20));
  else
    snprintf(buf, n, "%.1f KiB", b / 1024);
}

static double node_flops(const gr_node *n, int64_t batch) {
  if (!n->out && !(gr_ops[n->op].flags & GR_OPF_UPD)) return 0;
  switch (gr_ops[n->op].kclass) {
  case GR_KC_GEMM: {
    const gr_shape *a = &n->in[0]->shape;
    int64_t k = a->dim[n->a.trans_a ? 0 : 1];
    if (k == GR_BATCH) k = batch;
    return 2.0 * (double)gr_shape_numel(&n->out->shape, batch) * (double)k;
  }
  case GR_KC_ELEM: return (double)gr_shape_numel(&n->out->shape, batch);
  case GR_KC_CUSTOM:
    if (n->op == GR_OP_CONV2D || n->op == GR_OP_CONV2D_BN || n->op == GR_OP_CONV2D_GRAD_INPUT || n->op == GR_OP_CONV2D_GRAD_WEIGHT) {
      /* 2 * N * Cout * HoWo * Cin/groups * kh * kw, for the forward pass and each gradient */
      const gr_shape *x = n->op == GR_OP_CONV2D_GRAD_INPUT ? &n->a.shape : &n->in[0]->shape;
      const gr_shape *w = n->op == GR_OP_CONV2D_GRAD_WEIGHT ? &n->a.shape : &n->in[1]->shape;
      gr_conv_geom g = gr_conv_geometry(x, w, &n->a);
      return 2.0 * (double)batch * (double)(g.cout * g.ho * g.wo) * (double)(g.cin / g.groups * g.kh * g.kw);
    }
    return 4.0 * (double)gr_shape_numel(&n->in[0]->shape, batch);
  default: return 0;
  }
}

/* What one compiled plan costs per training step. */
typedef struct step_cost {
  int64_t trainable, frozen, buffers; /* parameter counts */
  double fwd, bwd;                    /* FLOPs: forward; backward + update */
  int64_t slab, train_arena, eval_arena;
} step_cost;

static step_cost cost_of(const gr_compiled *c) {
  step_cost k = {0};
  const gr_graph *g = c->g;
  for (int v = 0; v < g->n_values; v++) {
    const gr_value *val = g->values[v];
    if (val->role != GR_ROLE_PARAM) continue;
    int64_t n = gr_shape_inner(&val->shape);
    if (val->buffer)
      k.buffers += n;
    else if (val->trainable)
      k.trainable += n;
    else
      k.frozen += n;
  }
  for (int i = 0; i < c->train.n_nodes; i++) {
    const gr_node *n = c->train.nodes[i];
    double fl = node_flops(n, c->plan.batch_size);
    if (n->backward || (gr_ops[n->op].flags & GR_OPF_UPD))
      k.bwd += fl;
    else
      k.fwd += fl;
  }
  k.slab = c->rt.slab_bytes;
  k.train_arena = c->train.arena_bytes;
  k.eval_arena = c->eval.arena_bytes;
  return k;
}

/* A layer's parameter counts (its own and those of layers nested in it): trainable and frozen. */
static void layer_params(const gr_graph *g, const char *layer, int64_t *trainable, int64_t *frozen) {
  size_t ln = strlen(layer);
  *trainable = *frozen = 0;
  for (int v = 0; v < g->n_values; v++) {
    const gr_value *val = g->values[v];
    const char *vl = val->def->layer;
    if (val->role != GR_ROLE_PARAM || val->buffer || !vl || strncmp(vl, layer, ln) || (vl[ln] && vl[ln] != '.')) continue;
    *(val->trainable ? trainable : frozen) += gr_shape_inner(&val->shape);
  }
}

/* The feature cache of a compiled plan (phase), if it has one: what it stores per sample and what a
 * training step then computes. */
static void print_cache(const gr_compiled *c, FILE *f) {
  if (c->n_folded) /* not the cache, but also work the frozen region no longer does */
    fprintf(f, "  batchnorm folding: %d frozen batchnorm layer%s applied by the convolution%s before %s (no pass of %s own)\n", c->n_folded,
            c->n_folded == 1 ? "" : "s", c->n_folded == 1 ? "" : "s", c->n_folded == 1 ? "it" : "them", c->n_folded == 1 ? "its" : "their");
  if (!c->cut) return;
  char b1[32];
  double fwd = 0, all = 0;
  for (int i = 0; i < c->train_cached.n_nodes; i++) fwd += node_flops(c->train_cached.nodes[i], c->plan.batch_size);
  for (int i = 0; i < c->train.n_nodes; i++) all += node_flops(c->train.nodes[i], c->plan.batch_size);
  human_bytes(b1, sizeof b1, 4.0 * (double)gr_shape_inner(&c->cut->shape));
  fprintf(f, "  feature cache: the frozen prefix up to '%s' (%lld values, %s per sample) is computed once; "
             "a step from the cache %.1f MFLOP instead of %.1f (memory budget %lld MiB, then %s)\n",
          c->cut->def->layer ? c->cut->def->layer : "?", (long long)gr_shape_inner(&c->cut->shape), b1, fwd / 1e6, all / 1e6,
          (long long)c->plan.feature_cache_mb, c->plan.feature_cache_spill ? "a file" : "none");
}

/* `graft check`: the layers, parameters, per-step FLOPs and memory; with `base` (the same plan with
 * nothing frozen), what the freezing saves. */
static void print_summary(const gr_compiled *c, const gr_compiled *base, FILE *f) {
  const gr_model *m = &c->model;
  char sb[96], b1[32], b2[32], b3[32];
  step_cost k = cost_of(c);
  int64_t B = c->plan.batch_size;
  bool any_frozen = k.frozen > 0;
  fprintf(f, "plan %s: model '%s' (%s)\n", c->plan.path, m->name, m->path);
  fprintf(f, "  %-12s %-14s %-18s %12s%s\n", "layer", "op", "output", "parameters", any_frozen ? "       frozen" : "");
  fprintf(f, "  %-12s %-14s %-18s %12s\n", m->input->name, "input", gr_shape_str(&m->input->shape, sb, sizeof sb), "");
  for (int i = 0; i < m->n_layers; i++) {
    int64_t tr, fr;
    layer_params(c->g, m->layer_names[i], &tr, &fr);
    fprintf(f, "  %-12s %-14s %-18s %12lld", m->layer_names[i], m->layer_ops[i], gr_shape_str(&m->layer_outputs[i]->shape, sb, sizeof sb),
            (long long)tr);
    if (any_frozen) fprintf(f, " %12lld", (long long)fr);
    fputc('\n', f);
  }
  const gr_domain *dm = &c->plan.domain;
  if (c->dom_out) {
    int64_t tr, fr;
    layer_params(c->g, "domain", &tr, &fr);
    int64_t src = gr_source_rows(B, dm->source_fraction);
    fprintf(f, "domain adaptation: a domain head of %lld parameters reads '%s' %s through a gradient reversal layer; output %s\n",
            (long long)(tr + fr), dm->features, gr_shape_str(&c->dom_in->shape, sb, sizeof sb),
            gr_shape_str(&c->dom_out->shape, b1, sizeof b1));
    if (dm->lambda_constant)
      fprintf(f, "  a batch: %lld source + %lld target rows; lambda %g; label loss on %s rows, domain loss on both\n", (long long)src,
              (long long)(B - src), dm->lambda_max, gr_stream_names[dm->label_on]);
    else
      fprintf(f, "  a batch: %lld source + %lld target rows; lambda %g * (2/(1+exp(-%g p)) - 1), p the progress; label loss on %s rows, domain loss on both\n",
              (long long)src, (long long)(B - src), dm->lambda_max, dm->lambda_gamma, gr_stream_names[dm->label_on]);
  }
  fprintf(f, "parameters: %lld (%lld trainable, %lld frozen); buffers (batchnorm statistics): %lld\n",
          (long long)(k.trainable + k.frozen), (long long)k.trainable, (long long)k.frozen, (long long)k.buffers);
  fprintf(f, "loss: %s; optimizer: %s, learning rate %g, momentum %g, weight decay %g%s\n", gr_loss_names[c->plan.loss],
          gr_opt_names[c->plan.opt.kind], c->plan.opt.lr, c->plan.opt.momentum, c->plan.opt.weight_decay,
          c->plan.opt.nesterov ? ", nesterov" : "");
  fprintf(f, "per step (batch %lld): forward %.1f MFLOP, backward + update %.1f MFLOP\n", (long long)B, k.fwd / 1e6, k.bwd / 1e6);
  human_bytes(b1, sizeof b1, (double)k.slab);
  human_bytes(b2, sizeof b2, (double)k.train_arena);
  human_bytes(b3, sizeof b3, (double)k.eval_arena);
  fprintf(f, "memory: parameters + optimizer state %s, train arena %s, eval arena %s\n", b1, b2, b3);
  print_cache(c, f);
  if (base) {
    step_cost z = cost_of(base);
    human_bytes(b1, sizeof b1, (double)z.slab);
    human_bytes(b2, sizeof b2, (double)z.train_arena);
    fprintf(f, "with nothing frozen: backward + update %.1f MFLOP, parameters + optimizer state %s, train arena %s\n", z.bwd / 1e6,
            b1, b2);
    fprintf(f, "freezing saves: %.0f%% of the step's FLOPs, %.0f%% of its memory\n",
            100.0 * (1.0 - (k.fwd + k.bwd) / (z.fwd + z.bwd)),
            100.0 * (1.0 - (double)(k.slab + k.train_arena) / (double)(z.slab + z.train_arena)));
  }
  fprintf(f, "epochs %lld, seed %llu\n", (long long)c->plan.epochs, (unsigned long long)c->plan.seed);
}

/* `graft ir --dot`: the training program, its frozen forward region (no value in it gets a gradient)
 * and what the feature cache computes once. */
static void write_dot(const gr_compiled *c, FILE *f) {
  const gr_graph *g = c->g;
  bool *frozen = gr_alloc(g->arena, (size_t)g->n_nodes), *cached = gr_alloc(g->arena, (size_t)g->n_nodes);
  for (int i = 0; i < c->train.n_nodes; i++) {
    const gr_node *n = c->train.nodes[i];
    frozen[n->id] = n->out && !n->backward && !n->out->grad && !(gr_ops[n->op].flags & GR_OPF_LOSS) && n->op != GR_OP_INPUT;
  }
  for (int i = 0; c->cut && i < c->features.n_nodes; i++) cached[c->features.nodes[i]->id] = c->features.nodes[i]->op != GR_OP_PARAM;
  gr_graph_dot(g, c->train.nodes, c->train.n_nodes, frozen, cached, f);
}

/* The plan compiled once more: one of its later phases, or (no_transfer) with nothing frozen. Its
 * warnings were reported by the first compile of the same files, so they are not repeated. On
 * failure *out is freed. */
static bool compile_again(const char *plan, gr_diag *d, const gr_compile_opts *o, int phase, bool no_transfer, gr_compiled *out) {
  gr_compile_opts again = *o;
  again.phase = phase;
  again.no_transfer = no_transfer;
  d->mute_warnings = true;
  bool ok = gr_compile_plan(plan, d, &again, out);
  d->mute_warnings = false;
  if (!ok) gr_compiled_free(out);
  return ok;
}

/* One later phase of a gradually unfrozen plan, for `graft check`. */
static void print_phase(const gr_compiled *c, int k, int64_t epochs, FILE *f) {
  step_cost z = cost_of(c);
  char b1[32], b2[32];
  human_bytes(b1, sizeof b1, (double)z.slab);
  human_bytes(b2, sizeof b2, (double)z.train_arena);
  fprintf(f, "phase %d: %lld epochs, %lld trainable, %lld frozen; per step forward %.1f MFLOP, backward + update %.1f MFLOP; "
             "parameters + optimizer state %s, train arena %s\n",
          k + 1, (long long)epochs, (long long)z.trainable, (long long)z.frozen, z.fwd / 1e6, z.bwd / 1e6, b1, b2);
  print_cache(c, f);
}

/* A session with the model's weights: --weights (graft's own files, loaded strictly), else the plan's
 * init (with its mapping), else random with a warning. NULL after reporting. */
static gr_session *weighted_session(gr_compiled *c, gr_diag *d, const char *weights, int threads) {
  const gr_plan *p = &c->plan;
  if (threads > 0) gr_set_threads(threads);
  const char *wpath = weights ? weights : p->init_path;
  if (!wpath) gr_warning(d, (gr_loc){0}, "no --weights and no 'init' in the plan: using randomly initialised parameters");
  if (!weights && wpath && p->tl.exclude.n) /* head surgery: the excluded layers would be random */
    gr_warning(d, p->init_loc, "the plan's init leaves the parameters matching 'exclude' at their random start: pass the trained "
                               "weights with --weights");
  gr_session *s = gr_session_new(&c->rt, p->seed, d); /* weights first: cheaper to check than data */
  gr_load_opts lo = gr_plan_load_opts(c);
  if (s && wpath && !gr_session_load(s, wpath, weights ? NULL : &lo, NULL, d)) {
    if (!weights) gr_note(d, p->init_loc, "in the weights named here");
    gr_session_free(s);
    return NULL;
  }
  return s;
}

typedef struct scored {
  int64_t k;
  float p;
} scored;
static int by_score(const void *a, const void *b) {
  float x = ((const scored *)a)->p, y = ((const scored *)b)->p;
  return (x < y) - (x > y);
}

/* The name of the model's class k: an image folder's sub-folder (through the plan's class selection),
 * else its number in the data set's labels. */
static void class_label(const gr_plan *p, char *const *names, int64_t n_names, int64_t k, char *buf, size_t size) {
  int64_t label = p->n_select ? p->select[k] : k;
  if (names && label < n_names)
    snprintf(buf, size, "%s", names[label]);
  else
    snprintf(buf, size, "%lld", (long long)label);
}

/* graft predict: the model's output for every sample of the input files, as the top classes with
 * their probabilities (softmax for cross-entropy models, a sigmoid per output for bce_with_logits),
 * or the output values (mse). A line per sample: its number (or, for image files, its path). */
static bool run_predict(gr_compiled *c, gr_diag *d, const char *weights, const char *const *inputs, int n_inputs, int top, int threads) {
  const gr_plan *p = &c->plan;
  const gr_rt_model *m = &c->rt;
  gr_session *s = weighted_session(c, d, weights, threads);
  gr_dataset ds = {0};
  bool images = p->data_format == GR_DATA_IMAGES;
  bool ok = s && (images ? gr_dataset_load_image_files(&ds, inputs, n_inputs, &p->pixels, m, d)
                         : gr_dataset_load_inputs(&ds, (int)p->data_format, inputs[0], &p->pixels, m, d));
  int64_t n_names = 0; /* the training folder's sub-folders name the classes */
  char **names = ok && images && p->train.present ? gr_image_classes(p->train.images, &n_names, d) : NULL;
  if (ok && images && !names) gr_note(d, p->train.loc, "the class names are the sub-folders of the training data named here");
  ok = ok && (!images || names);
  int64_t C = m->n_classes;
  float *out = ok ? malloc(sizeof(float) * (size_t)(ds.n * C) + 1) : NULL;
  scored *row = ok ? malloc(sizeof(scored) * (size_t)C) : NULL;
  GR_CHECK(!ok || (out && row), "out of memory");
  double loss, acc;
  if (ok && gr_session_evaluate(s, &ds, &loss, &acc, out, d)) {
    if (top > C) top = (int)C;
    for (int64_t i = 0; i < ds.n; i++) {
      const float *o = out + i * C;
      const char *path = gr_dataset_sample_path(&ds, i);
      if (path)
        printf("%s:", path);
      else
        printf("%lld:", (long long)i);
      if (m->accuracy == GR_ACC_NONE) { /* a regression: its values */
        for (int64_t k = 0; k < C; k++) printf(" %.6g", o[k]);
        putchar('\n');
        continue;
      }
      float mx = o[0], sum = 0;
      for (int64_t k = 1; k < C; k++) mx = o[k] > mx ? o[k] : mx;
      for (int64_t k = 0; k < C; k++) sum += expf(o[k] - mx);
      for (int64_t k = 0; k < C; k++)
        row[k] = (scored){k, m->accuracy == GR_ACC_BINARY ? 1.0f / (1.0f + expf(-o[k])) : expf(o[k] - mx) / sum};
      qsort(row, (size_t)C, sizeof *row, by_score);
      for (int k = 0; k < top; k++) { /* the data set's own labels, where the plan selects classes */
        char label[256];
        class_label(p, names, n_names, row[k].k, label, sizeof label);
        printf("%s %s (%.4f)", k ? "," : "", label, row[k].p);
      }
      putchar('\n');
    }
  } else {
    ok = false;
  }
  free(out);
  free(row);
  gr_dataset_free(&ds);
  gr_image_classes_free(names, n_names);
  gr_session_free(s);
  return ok;
}

/* graft eval: the eval program over one split of the plan's data, with the given (or the plan's) weights. */
static bool run_eval(gr_compiled *c, gr_diag *d, const char *weights, const char *split, const char *output,
                     const char *metrics_path, int threads) {
  const gr_plan *p = &c->plan;
  bool target = !strcmp(split, "target");
  const gr_data_split *ds_spec = target ? &p->domain.test : !strcmp(split, "test") ? &p->test : &p->train;
  if (!ds_spec->present) {
    if (target)
      gr_error(d, p->domain.present ? p->domain.loc : p->data_loc, "the plan has no target test data to evaluate (domain_adaptation: target: test:)");
    else
      gr_error(d, p->data_loc, "the plan has no %s data to evaluate", split);
    return false;
  }
  gr_session *s = weighted_session(c, d, weights, threads);
  bool ok = s != NULL;
  gr_dataset ds = {0};
  gr_data_select sel = {target ? 0 : p->n_select, p->select, ds_spec == &p->train ? p->per_class : 0};
  if (ok && !gr_dataset_load(&ds, (int)p->data_format, ds_spec->images, ds_spec->labels, &p->pixels, &c->rt, &sel, d)) {
    gr_note(d, ds_spec->loc, "in the %s data named here", split);
    ok = false;
  }
  float *out = NULL;
  if (ok && output) {
    out = malloc(sizeof(float) * (size_t)(ds.n * c->rt.n_classes) + 1);
    GR_CHECK(out != NULL, "out of memory");
  }
  double loss, acc;
  if (ok && !gr_session_evaluate(s, &ds, &loss, &acc, out, d)) ok = false;
  if (ok) {
    printf("%s loss %.6f", split, loss);
    if (!isnan(acc)) printf(", %s accuracy %.4f", split, acc);
    printf(" (%lld samples)\n", (long long)ds.n);
    if (metrics_path) {
      gr_metrics *m = gr_metrics_open(metrics_path, false, d);
      ok = m != NULL;
      gr_metrics_record(m, split, "epoch#", 0.0, "loss", loss, "accuracy", acc, NULL);
      gr_metrics_close(m);
    }
    if (ok && output) {
      const gr_shape *os = &c->model.output->shape; /* [n, the output's per-sample shape] */
      int64_t shape[GR_MAX_RANK] = {ds.n};
      for (int i = 1; i < os->rank; i++) shape[i] = os->dim[i];
      gr_st_out t = {"output", os->rank, shape, out};
      ok = gr_st_write(output, &t, 1, NULL, d) == 0;
    }
  }
  free(out);
  gr_session_free(s);
  gr_dataset_free(&ds);
  return ok;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version")) {
    printf("graft %s\n", GRAFT_VERSION);
    return 0;
  }
  if (strcmp(cmd, "check") && strcmp(cmd, "ir") && strcmp(cmd, "train") && strcmp(cmd, "eval") && strcmp(cmd, "predict") &&
      strcmp(cmd, "compile"))
    return usage_error("unknown command '%s'; expected check, ir, train, eval, predict or compile", cmd);
  bool train = !strcmp(cmd, "train"), eval = !strcmp(cmd, "eval"), predict = !strcmp(cmd, "predict"), compile = !strcmp(cmd, "compile");
  gr_aot_opts aot = {.log = stdout};
  bool dot = false;
  long long top = 5;
  const char *inputs[argc]; /* predict's input files */
  int n_inputs = 0;
  const char *plan = NULL, *after = NULL, *metrics = NULL, *save = NULL, *resume = NULL, *weights = NULL, *output = NULL, *split = "test";
  long long epochs = 0, seed = -1, threads = 0;
  bool quiet = false;
  gr_compile_opts o = {.dump = stdout};
  for (int i = 2; i < argc; i++) {
    bool missing = false;
    const char *v;
    const char *a = argv[i];
    if (!strcmp(cmd, "ir") && (v = opt_value(argc, argv, &i, "--after", &missing))) {
      bool known = false;
      for (const char *const *p = gr_pass_names; *p; p++) known |= !strcmp(*p, v);
      if (!known) return usage_error("unknown pass '%s'; expected frontend, freeze, fold, loss, autodiff, optimizer, fuse, memplan or codegen", v);
      after = v;
    } else if (!strcmp(cmd, "ir") && !strcmp(a, "--dot")) {
      dot = true;
    } else if (!strcmp(cmd, "train") && (v = opt_value(argc, argv, &i, "--epochs", &missing))) {
      if (!parse_int(v, 1, 100000, &epochs)) return usage_error("--epochs takes an integer from 1 to 100000, got '%s'", v);
    } else if (!strcmp(cmd, "train") && (v = opt_value(argc, argv, &i, "--seed", &missing))) {
      if (!parse_int(v, 0, INT64_MAX, &seed)) return usage_error("--seed takes a non-negative integer, got '%s'", v);
    } else if ((train || eval) && (v = opt_value(argc, argv, &i, "--metrics", &missing))) {
      metrics = v;
    } else if (train && (v = opt_value(argc, argv, &i, "--save", &missing))) {
      save = v;
    } else if (train && (v = opt_value(argc, argv, &i, "--resume", &missing))) {
      resume = v;
    } else if ((eval || predict) && (v = opt_value(argc, argv, &i, "--weights", &missing))) {
      weights = v;
    } else if (eval && (v = opt_value(argc, argv, &i, "--output", &missing))) {
      output = v;
    } else if (eval && (v = opt_value(argc, argv, &i, "--split", &missing))) {
      if (strcmp(v, "test") && strcmp(v, "train") && strcmp(v, "target"))
        return usage_error("--split takes test, train or target, got '%s'", v);
      split = v;
    } else if (predict && (v = opt_value(argc, argv, &i, "--top", &missing))) {
      if (!parse_int(v, 1, 1 << 24, &top)) return usage_error("--top takes a positive integer, got '%s'", v);
    } else if ((train || eval || predict) && (v = opt_value(argc, argv, &i, "--threads", &missing))) {
      if (!parse_int(v, 1, 1024, &threads)) return usage_error("--threads takes an integer from 1 to 1024, got '%s'", v);
    } else if (compile && ((v = opt_value(argc, argv, &i, "-o", &missing)) || (v = opt_value(argc, argv, &i, "--output", &missing)))) {
      aot.out_dir = v;
    } else if (compile && (v = opt_value(argc, argv, &i, "--name", &missing))) {
      aot.name = v;
    } else if (compile && (v = opt_value(argc, argv, &i, "--target-cpu", &missing))) {
      aot.cpu = v;
    } else if (compile && (v = opt_value(argc, argv, &i, "--target-features", &missing))) {
      aot.features = v;
    } else if ((train || eval || predict) && (v = opt_value(argc, argv, &i, "--cache-dir", &missing))) {
      o.cg.cache_dir = v;
    } else if ((train || eval || predict) && !strcmp(a, "--no-cache")) {
      o.cg.no_cache = true;
    } else if (!strcmp(cmd, "train") && (!strcmp(a, "-q") || !strcmp(a, "--quiet"))) {
      quiet = true;
    } else if (missing) {
      return usage_error("option '%s' needs a value", a);
    } else if (a[0] == '-' && a[1]) {
      return usage_error("unknown option '%s'", a);
    } else if (plan && predict) {
      inputs[n_inputs++] = a;
    } else if (plan) {
      return usage_error("more than one plan given ('%s')", a);
    } else {
      plan = a;
    }
  }
  if (!plan) return usage_error("%s needs a plan file", cmd);
  if (compile && !aot.out_dir) return usage_error("compile needs an output directory: -o DIR (for %s)", plan);
  if (compile) {
    gr_diag cd;
    gr_diag_init(&cd);
    bool done = gr_aot_compile(plan, &aot, &cd);
    gr_diag_free(&cd);
    return done ? 0 : 1;
  }
  if (predict && !n_inputs) return usage_error("predict needs an input file after the plan (%s): images in the plan's data format", plan);
  if (eval && metrics && strcmp(split, "test"))
    return usage_error("--metrics writes test records; it cannot be used with --split %s", split);

  if (threads > 0) gr_set_threads((int)threads); /* before compiling: the kernels compile on that many threads too */
  gr_diag diag;
  gr_diag_init(&diag);
  if (dot && after) return usage_error("--dot draws the compiled training program; it takes no --after (%s)", after);
  if (!strcmp(cmd, "ir") && !dot) o.dump_after = after ? after : "memplan";
  if (dot) o.stop_before_codegen = true;
  if (!strcmp(cmd, "check")) o.stop_before_codegen = true;
  gr_plan_build b = {0}; /* phase 0 (all most commands need), and for train the later phases */
  gr_compiled *c = &b.c[0];
  bool ok = gr_compile_plan(plan, &diag, &o, c);
  b.n = 1;
  int rc = ok ? 0 : 1;
  if (ok && dot) {
    write_dot(c, stdout);
  } else if (ok && !strcmp(cmd, "check")) {
    const gr_transfer *t = &c->plan.tl;
    gr_compiled base; /* the same plan with nothing frozen, for comparison */
    bool have_base = (t->freeze.n || t->n_bn) && compile_again(plan, &diag, &o, 0, true, &base);
    print_summary(c, have_base ? &base : NULL, stdout);
    for (int k = 1; k < t->n_phases; k++) { /* gradual unfreezing: what each later phase costs */
      gr_compiled ph;
      if (!compile_again(plan, &diag, &o, k, false, &ph)) {
        rc = 1;
        break;
      }
      if (k == 1) printf("phase 1: %lld epochs, as above\n", (long long)t->phases[0].epochs);
      print_phase(&ph, k, t->phases[k].epochs, stdout);
      gr_compiled_free(&ph);
    }
    if (have_base) gr_compiled_free(&base);
  } else if (ok && !strcmp(cmd, "train") && epochs && c->plan.tl.n_phases) {
    rc = usage_error("--epochs cannot change a plan with phases (%s): its epochs are the phases'", plan);
  } else if (ok && !strcmp(cmd, "train")) {
    const gr_plan *p = &c->plan;
    gr_train_cfg cfg = {.data_format = (int)p->data_format, .shuffle = p->shuffle, .init_path = p->init_path,
                        .init_loc = p->init_loc, .init_opts = gr_plan_load_opts(c), .save_path = save,
                        .train_images = p->train.images, .train_labels = p->train.labels,
                        .test_images = p->test.present ? p->test.images : NULL,
                        .test_labels = p->test.present ? p->test.labels : NULL,
                        .train_loc = p->train.loc, .test_loc = p->test.loc,
                        .pixels = p->pixels, .batch_size = p->batch_size,
                        .train_select = {p->n_select, p->select, p->per_class}, .test_select = {p->n_select, p->select, 0},
                        .epochs = epochs ? epochs : p->epochs, .log_every = p->log_every, .eval_every = p->eval_every,
                        .seed = seed >= 0 ? (uint64_t)seed : p->seed, .lr = p->opt.lr, .schedule = p->schedule,
                        .metrics_path = metrics, .resume = resume,
                        .ckpt_dir = p->ckpt.dir, .ckpt_every_steps = p->ckpt.every_steps, .ckpt_every_epoch = p->ckpt.every_epoch,
                        .ckpt_keep = (int)p->ckpt.keep, .on_nan = p->on_nan,
                        .threads = (int)threads, .log = stdout, .quiet = quiet};
    const gr_domain *dm = &p->domain;
    if (dm->present) {
      cfg.target_images = dm->train.images, cfg.target_labels = dm->train.labels, cfg.target_loc = dm->train.loc;
      cfg.target_test_images = dm->test.present ? dm->test.images : NULL;
      cfg.target_test_labels = dm->test.present ? dm->test.labels : NULL;
      cfg.target_test_loc = dm->test.loc;
      cfg.source_fraction = dm->source_fraction, cfg.label_on = dm->label_on;
      cfg.lambda_constant = dm->lambda_constant, cfg.lambda_max = dm->lambda_max, cfg.lambda_gamma = dm->lambda_gamma;
    }
    gr_train_result res;
    if (!gr_build_phases(plan, &diag, &o, &b)) rc = 1; /* gradual unfreezing: each later phase compiled on its own */
    if (rc == 0) { /* where the machine code came from: compiled now, or the kernel cache */
      gr_jit_info ji = {0};
      int hits = 0;
      for (int k = 0; k < b.n; k++) {
        gr_jit_info jk = gr_jit_stats(b.c[k].jit);
        ji.seconds += jk.seconds;
        ji.cached |= jk.cached;
        hits += jk.from_cache;
        if (jk.parts > ji.parts) ji.parts = jk.parts;
        if (jk.threads > ji.threads) ji.threads = jk.threads;
      }
      char parts[64] = "";
      if (ji.parts > 1) snprintf(parts, sizeof parts, " (%d parts on %d thread%s)", ji.parts, ji.threads, ji.threads == 1 ? "" : "s");
      if (hits == b.n)
        printf("kernels: from the kernel cache (%.2f s)\n", ji.seconds);
      else
        printf("kernels: compiled in %.2f s%s%s\n", ji.seconds, parts, ji.cached ? ", kept in the kernel cache for the next run" : "");
      if (!p->tl.n_phases) b.run.phases[0].epochs = cfg.epochs; /* --epochs */
      rc = gr_train_phases(b.run.phases, b.run.n_phases, &cfg, &diag, &res) ? 0 : 1;
    }
  } else if (ok && predict) {
    if (n_inputs > 1 && c->plan.data_format != GR_DATA_IMAGES)
      rc = usage_error("predict takes one input file for a plan whose data is not an image folder; '%s' is one too many", inputs[1]);
    else
      rc = run_predict(c, &diag, weights, inputs, n_inputs, (int)top, (int)threads) ? 0 : 1;
  } else if (ok && eval) {
    rc = run_eval(c, &diag, weights, split, output, metrics, (int)threads) ? 0 : 1;
  }
  gr_plan_build_free(&b); /* phase 0, and the later ones train compiled */
  gr_diag_free(&diag);
  return rc;
}
