/* aot.c — `graft compile`: a plan compiled ahead of time into DIR/<name>.o, DIR/lib<name>.a and
 * DIR/<name>.h, for programs that train or predict through graft.h with graft's runtime library alone
 * (no LLVM, no libyaml, no plan or model files).
 *
 * Every phase is compiled exactly as the JIT compiles it (the same module, target machine and O2
 * pipeline, jit.c), so the machine code of a kernel is the JIT's; then the phases' modules are linked
 * into one, their step functions renamed <name>_graft_p<phase>_<program>, and three constants are
 * added: the run's description (artifact.c), the initial parameters (the plan's init file mapped as
 * `graft train` maps it, the rest initialised from the seed: a raw image of the first phase's
 * parameter slab) and the table of step functions, all reached from one exported graft_artifact,
 * <name>_graft, which the generated header declares. */
#include "compiler/archive.h"
#include "compiler/codegen.h"
#include "ir/atomic.h"
#include "runtime/artifact.h"
#include <errno.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Linker.h>
#include <stdlib.h>
#include <string.h>

static const char *const prog_names[4] = {"train", "eval", "features", "train_cached"};

/* A private constant holding bytes, aligned to 16. */
static LLVMValueRef bytes_global(LLVMModuleRef mod, const char *name, const void *data, size_t n) {
  LLVMContextRef ctx = LLVMGetModuleContext(mod);
  LLVMValueRef init = LLVMConstStringInContext2(ctx, data, n, 1);
  LLVMValueRef g = LLVMAddGlobal(mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMPrivateLinkage);
  LLVMSetAlignment(g, 16);
  return g;
}

/* The parameters of the first phase after initialisation and the plan's init file: the slab's bytes
 * up to the end of the last parameter (malloc'd); NULL after reporting. */
static uint8_t *initial_image(gr_plan_build *b, size_t *size, gr_diag *d) {
  const gr_rt_model *m = b->run.phases[0].m;
  gr_session *s = gr_session_new(m, b->run.seed, d);
  if (!s || !gr_plan_init_weights(b, s, d)) {
    gr_session_free(s);
    return NULL;
  }
  size_t end = gr_params_end(m);
  uint8_t *img = malloc(end + 1);
  GR_CHECK(img != NULL, "out of memory");
  memcpy(img, gr_session_slab(s), end);
  gr_session_free(s);
  *size = end;
  return img;
}

/* One module holding every phase's programs, optimised as the JIT does, steps renamed; NULL after
 * reporting. names[4 * phase + k] gets the step function names (malloc'd). */
static LLVMModuleRef phases_module(LLVMContextRef ctx, LLVMTargetMachineRef tm, gr_plan_build *b, const char *name,
                                   const gr_codegen_opts *cg, char **names, gr_diag *d) {
  LLVMModuleRef all = NULL;
  for (int k = 0; k < b->n; k++) {
    gr_compiled *c = &b->c[k];
    gr_program progs[4] = {c->train, c->eval, c->features, c->train_cached};
    int n = c->cut ? 4 : 2;
    LLVMModuleRef mod = gr_codegen_module(ctx, c->g, progs, n);
    gr_llvm_target(mod, tm);
    if (!gr_llvm_optimise(mod, tm, cg, d)) {
      LLVMDisposeModule(mod);
      if (all) LLVMDisposeModule(all);
      return NULL;
    }
    for (int p = 0; p < n; p++) {
      char *sym = gr_sprintf(&b->c[0].arena, "%s_graft_p%d_%s", name, k, prog_names[p]);
      LLVMValueRef fn = LLVMGetNamedFunction(mod, progs[p].name);
      GR_CHECK(fn != NULL, "step function %s missing from its module", progs[p].name);
      LLVMSetValueName2(fn, sym, strlen(sym));
      names[4 * k + p] = sym;
    }
    if (!all)
      all = mod;
    else if (LLVMLinkModules2(all, mod)) /* consumes mod */
      gr_internal_error(__FILE__, __LINE__, "linking the modules of phases 1 and %d failed", k + 1);
  }
  return all;
}

/* The exported artifact: {magic, abi, name, desc, desc_size, steps, n_steps, init, init_size}, the
 * layout of graft_artifact in include/graft.h. */
static void add_artifact(LLVMModuleRef mod, const char *name, const uint8_t *desc, size_t desc_size, char **names, int n_steps,
                         const uint8_t *init, size_t init_size) {
  LLVMContextRef ctx = LLVMGetModuleContext(mod);
  LLVMTypeRef i32 = LLVMInt32TypeInContext(ctx), i64 = LLVMInt64TypeInContext(ctx), ptr = LLVMPointerTypeInContext(ctx, 0);
  LLVMValueRef *fns = calloc((size_t)n_steps + 1, sizeof *fns);
  GR_CHECK(fns != NULL, "out of memory");
  for (int i = 0; i < n_steps; i++) fns[i] = names[i] ? LLVMGetNamedFunction(mod, names[i]) : LLVMConstPointerNull(ptr);
  LLVMValueRef table_init = LLVMConstArray2(ptr, fns, (uint64_t)n_steps);
  LLVMValueRef table = LLVMAddGlobal(mod, LLVMTypeOf(table_init), "graft.steps");
  LLVMSetInitializer(table, table_init);
  LLVMSetGlobalConstant(table, 1);
  LLVMSetLinkage(table, LLVMPrivateLinkage);
  free(fns);
  LLVMValueRef fields[] = {
      LLVMConstInt(i32, GR_ARTIFACT_MAGIC, 0),
      LLVMConstInt(i32, GR_ARTIFACT_ABI, 0),
      bytes_global(mod, "graft.name", name, strlen(name) + 1),
      bytes_global(mod, "graft.desc", desc, desc_size),
      LLVMConstInt(i64, desc_size, 0),
      table,
      LLVMConstInt(i64, (uint64_t)n_steps, 0),
      bytes_global(mod, "graft.init", init, init_size),
      LLVMConstInt(i64, init_size, 0),
  };
  LLVMValueRef art_init = LLVMConstStructInContext(ctx, fields, sizeof fields / sizeof *fields, 0);
  char sym[300];
  snprintf(sym, sizeof sym, "%s_graft", name);
  LLVMValueRef art = LLVMAddGlobal(mod, LLVMTypeOf(art_init), sym);
  LLVMSetInitializer(art, art_init);
  LLVMSetGlobalConstant(art, 1);
}

static void upper(const char *s, char *out, size_t n) {
  size_t i = 0;
  for (; s[i] && i + 1 < n; i++) out[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
  out[i] = 0;
}

/* DIR/<name>.h: the artifact's declaration, its sizes and the plan's input normalisation. */
static bool write_header(const char *path, const char *name, const char *plan, gr_plan_build *b, const char *cpu, const char *features,
                         gr_diag *d) {
  const gr_rt_model *m = b->run.phases[0].m;
  const gr_plan *p = &b->c[0].plan;
  char up[300];
  upper(name, up, sizeof up);
  int64_t epochs = 0;
  for (int k = 0; k < b->run.n_phases; k++) epochs += b->run.phases[k].epochs;
  int channels = m->in_shape.rank == 4 ? (int)(m->in_shape.dim[1] < 3 ? m->in_shape.dim[1] : 3) : 1;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  GR_CHECK(f != NULL, "out of memory");
  fprintf(f, "/* %s.h — generated by graft %s (graft compile) from ", name, GRAFT_VERSION);
  for (const char *c = plan; *c; c++) /* a path with the comment's end in it must not end the comment */
    fprintf(f, c[0] == '*' && c[1] == '/' ? "*\\" : "%c", *c);
  fprintf(f, ". Do not edit.\n");
  fprintf(f, " *\n * The plan compiled ahead of time for CPU %s%s%s%s. Link lib%s.a (or %s.o) and graft's\n", cpu, *features ? " (" : "",
          *features ? "features given explicitly" : "", *features ? ")" : "", name, name);
  fprintf(f, " * runtime (pkg-config --libs graft-runtime); use it through graft.h:\n *\n");
  fprintf(f, " *   graft_model *m;\n *   if (%s_open(NULL, &m) != GRAFT_OK) return 1;      // a context, at the plan's initial weights\n", name);
  fprintf(f, " *   graft_train_epoch(m, x, labels, n, &loss);  // x: n * %s_INPUT_NUMEL floats, labels: n int32\n", up);
  fprintf(f, " *   graft_close(m);\n *\n");
  fprintf(f, " * The calls (graft.h has the details):\n");
  fprintf(f, " *   %s_open / graft_close              create and destroy a context (parameters, optimizer state)\n", name);
  fprintf(f, " *   graft_train_step(m, x, y, n, &loss)  one optimizer step on n <= %s_MAX_BATCH samples\n", up);
  fprintf(f, " *   graft_train_epoch(m, x, y, n, &loss) an epoch, batched and shuffled as graft train does\n");
  fprintf(f, " *   graft_evaluate / graft_predict       loss and accuracy; the outputs (n * %s_CLASSES floats)\n", up);
  fprintf(f, " *   graft_save / graft_load              the weights as safetensors\n");
  fprintf(f, " *   graft_phase / graft_learning_rate    the current phase (of %d) and the next step's learning rate\n */\n",
          b->run.n_phases);
  fprintf(f, "#ifndef GRAFT_GENERATED_%s_H\n#define GRAFT_GENERATED_%s_H\n#include <graft.h>\n\n", up, up);
  fprintf(f, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
  fprintf(f, "extern const graft_artifact %s_graft;\n\n", name);
  fprintf(f, "#define %s_INPUT_NUMEL %lld  /* values per sample (%s) */\n", up, (long long)m->sample_numel,
          m->in_dtype == GR_I32 ? "int32 token ids" : "float32");
  fprintf(f, "#define %s_CLASSES %lld      /* output values per sample */\n", up, (long long)m->n_classes);
  fprintf(f, "#define %s_TARGET_NUMEL %lld /* 0: int32 class labels; else float32 targets per sample */\n", up, (long long)m->target_numel);
  fprintf(f, "#define %s_MAX_BATCH %lld\n", up, (long long)m->max_batch);
  fprintf(f, "#define %s_EPOCHS %lld\n#define %s_PHASES %d\n", up, (long long)epochs, up, b->run.n_phases);
  fprintf(f, "#define %s_SEED %lluULL\n\n", up, (unsigned long long)b->run.seed);
  fprintf(f, "/* The plan's pixel normalisation, as graft's loaders apply it to 8-bit images (IDX files): value =\n"
             " * (float)pixel * SCALE[c] - SHIFT[c] for channel c, in float arithmetic. */\n");
  fprintf(f, "#define %s_CHANNELS %d\n", up, channels);
  for (int pass = 0; pass < 2; pass++) {
    fprintf(f, "#define %s_PIXEL_%s {", up, pass ? "SHIFT" : "SCALE");
    for (int c = 0; c < channels; c++) {
      float v = pass ? (float)(p->pixels.mean[c] / p->pixels.std[c]) : (float)(1.0 / (255.0 * p->pixels.std[c]));
      fprintf(f, "%s%af", c ? ", " : "", (double)v);
    }
    fprintf(f, "}\n");
  }
  fprintf(f, "\nstatic inline graft_status %s_open(const graft_options *opts, graft_model **out) {\n", name);
  fprintf(f, "  return graft_open_artifact(&%s_graft, opts, out);\n}\n\n", name);
  fprintf(f, "#ifdef __cplusplus\n}\n#endif\n#endif\n");
  fclose(f);
  bool ok = gr_atomic_write_file(path, text, len, d);
  free(text);
  return ok;
}

bool gr_aot_compile(const char *plan, const gr_aot_opts *o, gr_diag *d) {
  gr_compile_opts co = {.stop_before_codegen = true, .cg = o->cg};
  gr_plan_build b;
  if (!gr_build_plan(plan, d, &co, &b)) return false;
  bool ok = true;
  const char *name = o->name ? o->name : b.c[0].model.name;
  for (const char *s = name; *s && ok; s++) ok = *s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (s > name && *s >= '0' && *s <= '9');
  if (!ok || !*name || strlen(name) > 200) {
    gr_error(d, gr_loc_file(b.c[0].model.path), "the model's name '%s' is not a C identifier: name the artifact with --name", name);
    gr_plan_build_free(&b);
    return false;
  }
  if (b.c[0].dom_out) {
    gr_error(d, b.c[0].plan.domain.loc, "graft compile does not support domain adaptation plans yet (the C API trains without target data)");
    gr_plan_build_free(&b);
    return false;
  }
  ok = gr_make_dirs(o->out_dir, 0777);
  if (!ok) gr_error(d, gr_loc_file(o->out_dir), "cannot create the output directory: %s", strerror(errno));
  size_t init_size = 0;
  uint8_t *init = ok ? initial_image(&b, &init_size, d) : NULL;
  ok = init != NULL;
  LLVMTargetMachineRef tm = ok ? gr_llvm_machine(o->cpu, o->features, d) : NULL;
  ok = ok && tm;
  LLVMContextRef ctx = LLVMContextCreate();
  char *names[4 * GR_MAX_PHASES] = {0};
  LLVMModuleRef mod = ok ? phases_module(ctx, tm, &b, name, &o->cg, names, d) : NULL;
  ok = ok && mod;
  char *cpu = tm ? LLVMGetTargetMachineCPU(tm) : NULL, *feat = tm ? LLVMGetTargetMachineFeatureString(tm) : NULL;
  if (ok) {
    gr_artifact_info info = {name, cpu, feat};
    size_t desc_size;
    uint8_t *desc = gr_artifact_encode(&b.run, &info, &desc_size);
    add_artifact(mod, name, desc, desc_size, names, 4 * b.n, init, init_size);
    free(desc);
    char *verr = NULL;
    if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &verr)) gr_internal_error(__FILE__, __LINE__, "the artifact's module does not verify: %s", verr);
    LLVMDisposeMessage(verr);
  }
  LLVMMemoryBufferRef obj = ok ? gr_llvm_emit(mod, tm, d) : NULL;
  ok = ok && obj;
  char path[4400];
  if (ok) {
    const char *data = LLVMGetBufferStart(obj);
    size_t size = LLVMGetBufferSize(obj);
    snprintf(path, sizeof path, "%s/%s.o", o->out_dir, name);
    ok = gr_atomic_write_file(path, data, size, d);
    char member[300], sym[300];
    snprintf(member, sizeof member, "%s.o", name);
    snprintf(sym, sizeof sym, "%s_graft", name);
    const char *syms[1] = {sym};
    gr_ar_member am = {member, data, size, syms, 1};
    snprintf(path, sizeof path, "%s/lib%s.a", o->out_dir, name);
    ok = ok && gr_write_archive(path, &am, 1, d);
    snprintf(path, sizeof path, "%s/%s.h", o->out_dir, name);
    ok = ok && write_header(path, name, plan, &b, cpu, o->features ? o->features : "", d);
  }
  int n_steps = 0;
  for (int k = 0; k < 4 * b.n; k++) n_steps += names[k] != NULL;
  if (ok && o->log)
    fprintf(o->log, "compiled %s: %d phase%s, %d step functions, for CPU %s -> %s/{%s.o, lib%s.a, %s.h}\n", plan, b.n, b.n == 1 ? "" : "s",
            n_steps, cpu, o->out_dir, name, name, name);
  if (obj) LLVMDisposeMemoryBuffer(obj);
  if (mod) LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  if (tm) LLVMDisposeTargetMachine(tm);
  free(init);
  gr_plan_build_free(&b);
  return ok;
}
