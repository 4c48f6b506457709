/* jit.c — from LLVM module to callable step functions, through machine code that a kernel cache on
 * disk can keep.
 *
 * Stance (after PostgreSQL's llvmjit.c): the target machine is the host's, named by LLVM 19
 * (LLVMGetHostCPUName/Features), unless an ahead-of-time build names another; every module gets its
 * data layout and triple; the O2 pipeline runs with loop and SLP vectorisation, interleaving and
 * unrolling switched on explicitly. The module is compiled to a position-independent object in memory
 * and that object is what ORC LLJIT links, so the code a run executes is the same bytes whether it
 * was compiled now, read back from the kernel cache, or written out by `graft compile`. The runtime's
 * functions (cblas, libm, mem*) are given to the JIT as absolute symbols, since resolving through the
 * process fails when the linker dropped a library.
 *
 * The kernel cache: an entry is the object file for one compiled graph, named by the SHA-256 of
 * everything the object depends on: the unoptimised module's bitcode (which is exactly what graft's
 * IR and memory plan made of the plan), graft's and LLVM's versions, the CPU and its features, and the
 * options. An entry is trusted only when its header names that key and its payload's own SHA-256
 * matches; anything else is reported and compiled again. Entries are written atomically. */
#include "compiler/codegen.h"
#include "ir/atomic.h"
#include "ir/sha256.h"
#include "runtime/runtime.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Error.h>
#include <llvm-c/ExecutionEngine.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/OrcEE.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct gr_jit {
  LLVMOrcLLJITRef jit;
  gr_jit_info info;
};

/* Reports an LLVM error (consuming it); returns true if there was one. */
static bool llvm_failed(LLVMErrorRef err, gr_diag *d, const char *what) {
  if (!err) return false;
  char *msg = LLVMGetErrorMessage(err);
  gr_error(d, (gr_loc){0}, "LLVM %s failed: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return true;
}

static void init_llvm(void) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
}

LLVMTargetMachineRef gr_llvm_machine(const char *cpu, const char *features, gr_diag *d) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, init_llvm);
  char *triple = LLVMGetDefaultTargetTriple(), *err = NULL;
  LLVMTargetRef target;
  if (LLVMGetTargetFromTriple(triple, &target, &err)) {
    gr_error(d, (gr_loc){0}, "LLVM has no target for %s: %s", triple, err);
    LLVMDisposeMessage(err);
    LLVMDisposeMessage(triple);
    return NULL;
  }
  /* the host's CPU comes with the host's features, then any given ones (which can add or remove); a
   * named CPU with its own implied features plus the given ones */
  char *hcpu = cpu ? NULL : LLVMGetHostCPUName(), *hfeat = cpu ? NULL : LLVMGetHostCPUFeatures(), *feat = NULL;
  if (hfeat && features && *features) {
    size_t n = strlen(hfeat) + strlen(features) + 2;
    feat = malloc(n);
    GR_CHECK(feat != NULL, "out of memory");
    snprintf(feat, n, "%s,%s", hfeat, features);
  }
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu ? cpu : hcpu, feat ? feat : hfeat ? hfeat : features ? features : "",
                                                    LLVMCodeGenLevelAggressive, LLVMRelocPIC, LLVMCodeModelDefault);
  free(feat);
  LLVMDisposeMessage(hcpu);
  LLVMDisposeMessage(hfeat);
  LLVMDisposeMessage(triple);
  if (!tm) gr_error(d, (gr_loc){0}, "LLVM cannot make a target machine for CPU '%s'", cpu ? cpu : "(host)");
  return tm;
}

/* O2, not O3: on ResNet-18 it optimises in 1.9 s instead of 3.5 s, and the steps run as fast
 * (O3's extra inlining and unrolling find nothing more in graft's loop kernels). */
#define GR_PIPELINE "default<O2>"

static bool optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, gr_diag *d) {
  LLVMPassBuilderOptionsRef o = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(o, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(o, 1);
  LLVMPassBuilderOptionsSetLoopInterleaving(o, 1);
  LLVMPassBuilderOptionsSetLoopUnrolling(o, 1);
  LLVMErrorRef err = LLVMRunPasses(mod, GR_PIPELINE, tm, o);
  LLVMDisposePassBuilderOptions(o);
  return !llvm_failed(err, d, "optimisation");
}

void gr_llvm_target(LLVMModuleRef mod, LLVMTargetMachineRef tm) {
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  char *dls = LLVMCopyStringRepOfTargetData(dl);
  LLVMSetDataLayout(mod, dls);
  LLVMDisposeMessage(dls);
  LLVMDisposeTargetData(dl);
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(mod, triple);
  LLVMDisposeMessage(triple);
  char *verr = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &verr))
    gr_internal_error(__FILE__, __LINE__, "generated LLVM IR does not verify: %s", verr);
  LLVMDisposeMessage(verr);
}

bool gr_llvm_optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, const gr_codegen_opts *o, gr_diag *d) {
  if (!(o && o->no_opt) && !optimise(mod, tm, d)) return false;
  if (o && o->llvm_dump) {
    char *s = LLVMPrintModuleToString(mod);
    fputs(s, o->llvm_dump);
    LLVMDisposeMessage(s);
  }
  return true;
}

LLVMMemoryBufferRef gr_llvm_emit(LLVMModuleRef mod, LLVMTargetMachineRef tm, gr_diag *d) {
  char *err = NULL;
  LLVMMemoryBufferRef buf = NULL;
  if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &err, &buf)) {
    gr_error(d, (gr_loc){0}, "LLVM code generation failed: %s", err);
    LLVMDisposeMessage(err);
    return NULL;
  }
  return buf;
}

static bool define_externs(LLVMOrcLLJITRef jit, gr_diag *d) {
  int n = 0;
  while (gr_codegen_externs[n].name) n++;
  LLVMOrcCSymbolMapPair *pairs = calloc((size_t)n, sizeof *pairs);
  GR_CHECK(pairs != NULL, "out of memory");
  for (int i = 0; i < n; i++) {
    pairs[i].Name = LLVMOrcLLJITMangleAndIntern(jit, gr_codegen_externs[i].name);
    pairs[i].Sym.Address = (LLVMOrcJITTargetAddress)(uintptr_t)gr_codegen_externs[i].addr;
    pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
  }
  LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, (size_t)n);
  free(pairs);
  return !llvm_failed(LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(jit), mu), d, "symbol definition");
}

/* ---- the kernel cache ---- */

enum { KC_HEADER = 8 + 32 + 8 + 32 }; /* magic, key, payload size (little-endian), payload SHA-256 */
static const char kc_magic[8] = {'G', 'R', 'A', 'F', 'T', 'K', 'C', '1'};

/* The cache directory: the option, else $GRAFT_CACHE_DIR, $XDG_CACHE_HOME/graft, ~/.cache/graft; NULL
 * when there is none (no HOME). */
static const char *cache_dir(const gr_codegen_opts *o, char *buf, size_t size) {
  const char *e;
  if (o && o->cache_dir) return o->cache_dir;
  if ((e = getenv("GRAFT_CACHE_DIR")) && *e) return e;
  if ((e = getenv("XDG_CACHE_HOME")) && *e) return snprintf(buf, size, "%s/graft", e), buf;
  if ((e = getenv("HOME")) && *e) return snprintf(buf, size, "%s/.cache/graft", e), buf;
  return NULL;
}

/* Machine code from the cache is run, so the cache must be the user's alone: a directory that other
 * users can write (or that belongs to another user) is not used, with a warning. A missing one is
 * fine (it is created 0700). */
static bool cache_dir_private(const char *dir, gr_diag *d) {
  struct stat st;
  if (stat(dir, &st) != 0) return true;
  if (S_ISDIR(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & (S_IWGRP | S_IWOTH))) return true;
  gr_warning(d, gr_loc_file(dir), "the kernel cache directory is %s: not used (the kernels are compiled; chmod go-w it, or use --cache-dir)",
             !S_ISDIR(st.st_mode) ? "not a directory" : st.st_uid != geteuid() ? "owned by another user" : "writable by other users");
  return false;
}

static void cache_key(LLVMModuleRef mod, LLVMTargetMachineRef tm, const gr_codegen_opts *o, uint8_t key[32]) {
  gr_sha256 h;
  gr_sha256_init(&h);
  unsigned maj, min, pat;
  LLVMGetVersion(&maj, &min, &pat);
  char *cpu = LLVMGetTargetMachineCPU(tm), *feat = LLVMGetTargetMachineFeatureString(tm), *triple = LLVMGetTargetMachineTriple(tm);
  char head[8192];
  int n = snprintf(head, sizeof head, "graft %s\nllvm %u.%u.%u\ntriple %s\ncpu %s\nfeatures %s\nno_opt %d\npipeline %s\n", GRAFT_VERSION, maj,
                   min, pat, triple, cpu, feat, o && o->no_opt, GR_PIPELINE);
  gr_sha256_update(&h, head, (size_t)(n < (int)sizeof head ? n : (int)sizeof head - 1));
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  LLVMDisposeMessage(triple);
  LLVMMemoryBufferRef bc = LLVMWriteBitcodeToMemoryBuffer(mod);
  gr_sha256_update(&h, LLVMGetBufferStart(bc), LLVMGetBufferSize(bc));
  LLVMDisposeMemoryBuffer(bc);
  gr_sha256_final(&h, key);
}

static void entry_path(const char *dir, const uint8_t key[32], char *buf, size_t size) {
  char hex[65];
  gr_sha256_hex(key, hex);
  snprintf(buf, size, "%s/%s.o", dir, hex);
}

/* The cached object for key, or NULL: absent (silently), or damaged (with a warning: it will be
 * compiled and written again). */
static LLVMMemoryBufferRef cache_read(const char *path, const uint8_t key[32], gr_diag *d) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
  if (!f) {
    if (fd >= 0) close(fd);
    if (errno == ELOOP) gr_warning(d, gr_loc_file(path), "kernel cache entry is a symbolic link: not trusted, compiling the kernels again");
    return NULL;
  }
  const char *why = NULL;
  uint8_t head[KC_HEADER], sum[32];
  char *data = NULL;
  uint64_t size = 0;
  struct stat st;
  if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode))
    why = "not a regular file";
  else if (st.st_uid != geteuid())
    why = "owned by another user";
  else if (fread(head, 1, KC_HEADER, f) != KC_HEADER || memcmp(head, kc_magic, 8))
    why = "not a graft kernel cache entry";
  else if (memcmp(head + 8, key, 32))
    why = "its key is not its name";
  if (!why) {
    for (int i = 0; i < 8; i++) size |= (uint64_t)head[40 + i] << (8 * i);
    if ((uint64_t)st.st_size != KC_HEADER + size) why = "truncated or extended";
  }
  if (!why) {
    data = malloc(size + 1);
    GR_CHECK(data != NULL, "out of memory");
    gr_sha256 h;
    gr_sha256_init(&h);
    if (fread(data, 1, size, f) != size) why = "cannot be read";
    gr_sha256_update(&h, data, size);
    gr_sha256_final(&h, sum);
    if (!why && memcmp(sum, head + 48, 32)) why = "its contents do not match their checksum";
  }
  fclose(f);
  if (why) {
    gr_warning(d, gr_loc_file(path), "kernel cache entry is damaged (%s): compiling the kernels again", why);
    free(data);
    return NULL;
  }
  LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(data, size, path);
  free(data);
  return buf;
}

static void ignore_diag(void *user, gr_diag_kind kind, gr_loc loc, const char *msg) {}

/* Stores obj under key, atomically; a failure is a warning (the run goes on without the cache). */
static bool cache_write(const char *dir, const char *path, const uint8_t key[32], LLVMMemoryBufferRef obj, gr_diag *d) {
  const char *data = LLVMGetBufferStart(obj);
  uint64_t size = LLVMGetBufferSize(obj);
  uint8_t head[KC_HEADER];
  memcpy(head, kc_magic, 8);
  memcpy(head + 8, key, 32);
  for (int i = 0; i < 8; i++) head[40 + i] = (uint8_t)(size >> (8 * i));
  gr_sha256 h;
  gr_sha256_init(&h);
  gr_sha256_update(&h, data, size);
  gr_sha256_final(&h, head + 48);
  gr_diag quiet; /* the failure is a warning here, not the atomic writer's error */
  gr_diag_init(&quiet);
  quiet.sink = ignore_diag;
  gr_atomic_file f;
  bool ok = gr_make_dirs(dir, 0700) && gr_atomic_begin(&f, path, &quiet);
  int err = errno;
  if (ok) {
    gr_atomic_write(&f, head, KC_HEADER);
    gr_atomic_write(&f, data, size);
    err = f.err;
    ok = gr_atomic_commit(&f, NULL, &quiet);
  }
  gr_diag_free(&quiet);
  if (!ok)
    gr_warning(d, gr_loc_file(dir), "cannot write to the kernel cache: %s (the next run compiles again; --no-cache turns the cache off)",
               strerror(err ? err : EIO));
  return ok;
}

/* GRAFT_PERF=1: objects are linked by RTDyld with LLVM's perf listener, which writes a jitdump file,
 * so that `perf record -k 1` then `perf inject --jit` names every kernel of the JIT code (they are
 * anonymous addresses otherwise). For profiling only; the default JITLink layer is used otherwise. */
static LLVMOrcObjectLayerRef perf_layer(void *ctx, LLVMOrcExecutionSessionRef es, const char *triple) {
  LLVMOrcObjectLayerRef layer = LLVMOrcCreateRTDyldObjectLinkingLayerWithSectionMemoryManager(es);
  LLVMJITEventListenerRef perf = LLVMCreatePerfJITEventListener(); /* NULL when LLVM was built without it */
  if (perf) LLVMOrcRTDyldObjectLinkingLayerRegisterJITEventListener(layer, perf);
  return layer;
}

/* An LLJIT holding objs[0..n) (consumed), with the step functions' addresses put in progs; NULL
 * after reporting. */
static gr_jit *load_objects(LLVMMemoryBufferRef *objs, int n, LLVMTargetMachineRef tm_consumed, gr_program *progs, int n_progs, gr_diag *d) {
  gr_jit *j = calloc(1, sizeof *j);
  GR_CHECK(j != NULL, "out of memory");
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm_consumed));
  const char *perf = getenv("GRAFT_PERF");
  if (perf && *perf && strcmp(perf, "0")) LLVMOrcLLJITBuilderSetObjectLinkingLayerCreator(builder, perf_layer, NULL);
  bool ok = !llvm_failed(LLVMOrcCreateLLJIT(&j->jit, builder), d, "JIT creation"); /* consumes builder */
  ok = ok && define_externs(j->jit, d);
  for (int i = 0; i < n; i++) {
    if (ok) ok = !llvm_failed(LLVMOrcLLJITAddObjectFile(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), objs[i]), d, "adding the object");
    else LLVMDisposeMemoryBuffer(objs[i]);
    objs[i] = NULL; /* owned by the JIT once added, even on failure */
  }
  for (int i = 0; ok && i < n_progs; i++) {
    LLVMOrcExecutorAddress addr = 0;
    ok = !llvm_failed(LLVMOrcLLJITLookup(j->jit, &addr, progs[i].name), d, "symbol lookup");
    progs[i].fn = (gr_step_fn)(uintptr_t)addr;
  }
  if (!ok) {
    gr_jit_free(j);
    return NULL;
  }
  return j;
}

/* ---- compiling in parts, in parallel ----
 *
 * LLVM optimises and emits a module on one thread, and that is most of a cold start (ResNet-18's
 * training and evaluation programs: 2.8 s on this machine). So a large graph is compiled as several
 * modules, one per thread graft may use (--threads), compiled on its thread pool, and the JIT links
 * their objects together.
 * Every part is generated from the same graph (generation is deterministic and takes
 * milliseconds), then keeps the bodies of its own functions and declares the others. A unit of the
 * split is a step function, or a kernel with the functions only it uses (its parallel bodies and
 * pack functions, called or passed by pointer); units go to parts largest first, each to the
 * lightest part, by instructions of unoptimised IR.
 * A function called from another part gets external linkage, so that the objects link; the others
 * stay internal. Each part compiles the code it would in one module, except that a kernel is not
 * inlined into a step function across parts; the results are the same bits (tests/jit_parts.sh
 * trains with one part and with three and compares the weights). Each part is its own entry in the
 * kernel cache. A small graph stays one module (a part per GR_JIT_PART_COST instructions at most);
 * GRAFT_JIT_PARTS=N sets the count (1: one module, as `graft compile` makes). */
#define GR_JIT_MAX_PARTS 16
#define GR_JIT_PART_COST 1200 /* instructions of unoptimised IR per part, at least */

typedef struct jit_split {
  int n_fn, n_parts;
  int *part;      /* function (in module order, definitions only) -> its part */
  bool *exported; /* called from another part */
  char **names;   /* its name: every part's module must define the same functions in the same order */
} jit_split;

static void split_free(jit_split *sp) {
  for (int i = 0; sp->names && i < sp->n_fn; i++) free(sp->names[i]);
  free(sp->part), free(sp->exported), free(sp->names);
}

/* The functions mod defines, in module order; their count in *n. */
static LLVMValueRef *defined_functions(LLVMModuleRef mod, int *n) {
  int count = 0, cap = 64;
  LLVMValueRef *fs = malloc((size_t)cap * sizeof *fs);
  GR_CHECK(fs != NULL, "out of memory");
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f)) continue;
    if (count == cap) {
      fs = realloc(fs, (size_t)(cap *= 2) * sizeof *fs);
      GR_CHECK(fs != NULL, "out of memory");
    }
    fs[count++] = f;
  }
  *n = count;
  return fs;
}

static int function_index(LLVMValueRef *fs, int n, LLVMValueRef f) {
  for (int i = 0; i < n; i++)
    if (fs[i] == f) return i;
  return -1;
}

/* Calls fn(user function's index) for every function among fs that uses v (through instructions,
 * or constants that instructions use). */
static void each_user_function(LLVMValueRef *fs, int n, LLVMValueRef v, void (*fn)(void *, int), void *arg, int depth) {
  for (LLVMUseRef u = LLVMGetFirstUse(v); u; u = LLVMGetNextUse(u)) {
    LLVMValueRef user = LLVMGetUser(u);
    if (LLVMIsAInstruction(user)) {
      int j = function_index(fs, n, LLVMGetBasicBlockParent(LLVMGetInstructionParent(user)));
      if (j >= 0) fn(arg, j);
    } else if (LLVMIsAConstant(user) && depth < 4) {
      each_user_function(fs, n, user, fn, arg, depth + 1);
    }
  }
}

static int uf_find(int *up, int i) {
  while (up[i] != i) i = up[i] = up[up[i]];
  return i;
}

typedef struct split_walk {
  int *up, *part, i;
  const bool *root;
  bool cross;
} split_walk;

static void join_user(void *arg, int j) {
  split_walk *w = arg;
  if (!w->root[j]) w->up[uf_find(w->up, w->i)] = uf_find(w->up, j);
}
static void note_cross(void *arg, int j) {
  split_walk *w = arg;
  if (w->part[j] != w->part[w->i]) w->cross = true;
}

static int parts_wanted(int64_t cost) {
  const char *e = getenv("GRAFT_JIT_PARTS");
  if (e && *e) {
    int n = atoi(e);
    return n < 1 ? 1 : n > GR_JIT_MAX_PARTS ? GR_JIT_MAX_PARTS : n;
  }
  int64_t n = cost / GR_JIT_PART_COST, threads = gr_threads();
  if (n > threads) n = threads;
  return n < 1 ? 1 : n > GR_JIT_MAX_PARTS ? GR_JIT_MAX_PARTS : (int)n;
}

/* How mod (generated from progs) splits into parts. */
static void split_module(LLVMModuleRef mod, const gr_program *progs, int n_progs, jit_split *sp) {
  int n;
  LLVMValueRef *fs = defined_functions(mod, &n);
  int *up = malloc((size_t)n * sizeof *up), *part = malloc((size_t)n * sizeof *part), *order = malloc((size_t)n * sizeof *order);
  int64_t *cost = calloc((size_t)n, sizeof *cost), *unit_cost = calloc((size_t)n, sizeof *unit_cost), total = 0;
  bool *root = calloc((size_t)n, sizeof *root), *exported = calloc((size_t)n, sizeof *exported);
  GR_CHECK(up && part && order && cost && unit_cost && root && exported, "out of memory");
  for (int i = 0; i < n; i++) {
    up[i] = i;
    for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fs[i]); bb; bb = LLVMGetNextBasicBlock(bb))
      for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in)) cost[i]++;
    total += cost[i];
    size_t len;
    const char *name = LLVMGetValueName2(fs[i], &len);
    for (int k = 0; k < n_progs; k++) root[i] |= !strcmp(name, progs[k].name);
  }
  int parts = parts_wanted(total), n_units = 0;
  if (parts == 1) { /* one module: nothing to split */
    *sp = (jit_split){.n_parts = 1};
    free(fs), free(up), free(part), free(order), free(cost), free(unit_cost), free(root), free(exported);
    return;
  }
  split_walk w = {.up = up, .part = part, .root = root};
  for (w.i = 0; w.i < n; w.i++)
    if (!root[w.i]) each_user_function(fs, n, fs[w.i], join_user, &w, 0);
  for (int i = 0; i < n; i++) {
    int r = uf_find(up, i);
    if (r == i) order[n_units++] = i;
    unit_cost[r] += cost[i];
  }
  for (int a = 1; a < n_units; a++) /* largest first; ties in module order (insertion sort: n is small) */
    for (int b = a; b > 0 && unit_cost[order[b]] > unit_cost[order[b - 1]]; b--) {
      int t = order[b];
      order[b] = order[b - 1], order[b - 1] = t;
    }
  if (parts > n_units) parts = n_units > 0 ? n_units : 1;
  int64_t load[GR_JIT_MAX_PARTS] = {0};
  for (int u = 0; u < n_units; u++) {
    int best = 0;
    for (int p = 1; p < parts; p++)
      if (load[p] < load[best]) best = p;
    load[best] += unit_cost[order[u]];
    part[order[u]] = best;
  }
  for (int i = 0; i < n; i++) part[i] = part[uf_find(up, i)];
  for (w.i = 0; w.i < n; w.i++) {
    w.cross = false;
    each_user_function(fs, n, fs[w.i], note_cross, &w, 0);
    exported[w.i] = w.cross;
  }
  char **names = calloc((size_t)n, sizeof *names);
  GR_CHECK(names != NULL, "out of memory");
  for (int i = 0; i < n; i++) {
    size_t len;
    names[i] = strdup(LLVMGetValueName2(fs[i], &len));
    GR_CHECK(names[i] != NULL, "out of memory");
  }
  /* a global would be defined in every part: a constant could be, a variable could not */
  GR_CHECK(!LLVMGetFirstGlobal(mod), "the generated module has globals: it cannot be compiled in parts");
  *sp = (jit_split){.n_fn = n, .n_parts = parts, .part = part, .exported = exported, .names = names};
  free(fs), free(up), free(order), free(cost), free(unit_cost), free(root);
}

/* Keeps in mod (generated as the split's module was) the bodies of part p's functions; the others
 * become declarations, or go when nothing calls them. */
static void keep_part(LLVMModuleRef mod, const jit_split *sp, int p) {
  int n;
  LLVMValueRef *fs = defined_functions(mod, &n);
  GR_CHECK(n == sp->n_fn, "the modules of a split differ: %d functions, %d expected", n, sp->n_fn);
  for (int i = 0; i < n; i++) {
    LLVMValueRef f = fs[i];
    size_t len;
    GR_CHECK(!strcmp(LLVMGetValueName2(f, &len), sp->names[i]), "the modules of a split differ: %s where %s was", LLVMGetValueName2(f, &len),
             sp->names[i]);
    if (sp->part[i] == p) {
      if (sp->exported[i]) {
        LLVMSetLinkage(f, LLVMExternalLinkage);
        LLVMSetVisibility(f, LLVMDefaultVisibility);
      }
      continue;
    }
    LLVMSetValueName2(f, "", 0); /* the name goes to its declaration (kept in the split) */
    LLVMValueRef decl = LLVMAddFunction(mod, sp->names[i], LLVMGlobalGetValueType(f));
    LLVMSetFunctionCallConv(decl, LLVMGetFunctionCallConv(f));
    LLVMReplaceAllUsesWith(f, decl);
    LLVMDeleteFunction(f);
    fs[i] = decl;
  }
  for (int i = 0; i < n; i++)
    if (sp->part[i] != p && !LLVMGetFirstUse(fs[i])) LLVMDeleteFunction(fs[i]);
  free(fs);
}

typedef struct jit_part {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMTargetMachineRef tm;
  LLVMMemoryBufferRef obj; /* its machine code: from the cache, or compiled */
  uint8_t key[32];
  char path[4300];
  bool hit;
  char err[1024]; /* the compiling thread's error, reported by the caller */
} jit_part;

typedef struct jit_work {
  jit_part *parts;
  const gr_codegen_opts *o;
} jit_work;

static void keep_error(void *user, gr_diag_kind kind, gr_loc loc, const char *msg) {
  jit_part *pt = user;
  if (kind == GR_DIAG_ERROR && !pt->err[0]) snprintf(pt->err, sizeof pt->err, "%s", msg);
}

/* Optimises and emits part i, unless it has an object already (a gr_parallel task). */
static void compile_part(void *arg, int64_t i, int64_t n) {
  (void)n;
  jit_work *w = arg;
  jit_part *pt = &w->parts[i];
  if (pt->obj) return;
  gr_diag d;
  gr_diag_init(&d);
  d.sink = keep_error;
  d.user = pt;
  if (gr_llvm_optimise(pt->mod, pt->tm, w->o, &d)) pt->obj = gr_llvm_emit(pt->mod, pt->tm, &d);
  gr_diag_free(&d);
}

/* Compiles every part without an object on the thread pool (runtime/pool.c: a part per task, taken
 * by whichever thread is free, the calling one too); *n_threads: how many threads that can be.
 * False after reporting. */
static bool compile_all(jit_part *parts, int n, const gr_codegen_opts *o, int *n_threads, gr_diag *d) {
  jit_work w = {.parts = parts, .o = o};
  int todo = 0;
  for (int i = 0; i < n; i++) todo += !parts[i].obj;
  *n_threads = todo < gr_threads() ? todo : gr_threads();
  gr_parallel(compile_part, &w, n);
  bool ok = true;
  for (int i = 0; i < n; i++)
    if (!parts[i].obj) {
      gr_error(d, (gr_loc){0}, "%s", parts[i].err[0] ? parts[i].err : "LLVM produced no object");
      ok = false;
    }
  return ok;
}

/* An LLJIT linking copies of the parts' objects (kept for a second attempt); NULL after reporting. */
static gr_jit *link_parts(const jit_part *parts, int n, gr_program *progs, int n_progs, gr_diag *d) {
  LLVMTargetMachineRef tm = gr_llvm_machine(NULL, NULL, d);
  if (!tm) return NULL;
  LLVMMemoryBufferRef objs[GR_JIT_MAX_PARTS];
  for (int p = 0; p < n; p++)
    objs[p] = LLVMCreateMemoryBufferWithMemoryRangeCopy(LLVMGetBufferStart(parts[p].obj), LLVMGetBufferSize(parts[p].obj), "graft part");
  return load_objects(objs, n, tm, progs, n_progs, d);
}

gr_jit *gr_jit_compile(gr_graph *g, gr_program *progs, int n_progs, const gr_codegen_opts *o, gr_diag *d) {
  double t0 = gr_now();
  jit_part *parts = calloc(GR_JIT_MAX_PARTS, sizeof *parts);
  GR_CHECK(parts != NULL, "out of memory");
  parts[0].ctx = LLVMContextCreate();
  parts[0].mod = gr_codegen_module(parts[0].ctx, g, progs, n_progs);
  jit_split sp = {.n_parts = 1};
  if (!(o && o->llvm_dump)) split_module(parts[0].mod, progs, n_progs, &sp);
  int n = sp.n_parts;
  char dbuf[4096];
  const char *dir = o && (o->no_cache || o->llvm_dump) ? NULL : cache_dir(o, dbuf, sizeof dbuf);
  if (dir && !cache_dir_private(dir, d)) dir = NULL;
  bool ok = true, hit = dir != NULL, stored = false;
  int threads = 0; /* that compiled the parts */
  for (int p = 0; p < n && ok; p++) {
    jit_part *pt = &parts[p];
    if (p > 0) {
      pt->ctx = LLVMContextCreate();
      pt->mod = gr_codegen_module(pt->ctx, g, progs, n_progs);
    }
    if (n > 1) keep_part(pt->mod, &sp, p);
    ok = (pt->tm = gr_llvm_machine(NULL, NULL, d)) != NULL;
    if (!ok) break;
    gr_llvm_target(pt->mod, pt->tm);
    if (dir) {
      cache_key(pt->mod, pt->tm, o, pt->key);
      entry_path(dir, pt->key, pt->path, sizeof pt->path);
      pt->obj = cache_read(pt->path, pt->key, d);
      pt->hit = pt->obj != NULL;
    }
    hit &= pt->hit;
  }
  split_free(&sp);
  gr_jit *j = NULL;
  bool any_hit = false;
  for (int p = 0; p < n; p++) any_hit |= parts[p].hit;
  if (ok && any_hit) { /* the misses compiled, then everything linked; a valid-looking entry LLVM cannot link is not trusted */
    gr_diag quiet;
    gr_diag_init(&quiet);
    quiet.sink = ignore_diag;
    ok = hit || compile_all(parts, n, o, &threads, d);
    if (ok && !(j = link_parts(parts, n, progs, n_progs, &quiet))) {
      gr_warning(d, gr_loc_file(dir), "kernel cache entries cannot be loaded: compiling the kernels again");
      for (int p = 0; p < n; p++)
        if (parts[p].hit) {
          LLVMDisposeMemoryBuffer(parts[p].obj);
          parts[p].obj = NULL, parts[p].hit = false;
        }
      hit = false;
    }
    gr_diag_free(&quiet);
  }
  if (ok && !j && compile_all(parts, n, o, &threads, d)) j = link_parts(parts, n, progs, n_progs, d);
  for (int p = 0; j && dir && p < n; p++)
    if (!parts[p].hit) stored |= cache_write(dir, parts[p].path, parts[p].key, parts[p].obj, d);
  if (j) j->info = (gr_jit_info){.from_cache = hit, .cached = stored, .seconds = gr_now() - t0, .parts = n, .threads = threads};
  for (int p = 0; p < n; p++) {
    if (parts[p].obj) LLVMDisposeMemoryBuffer(parts[p].obj);
    if (parts[p].mod) LLVMDisposeModule(parts[p].mod);
    if (parts[p].ctx) LLVMContextDispose(parts[p].ctx);
    if (parts[p].tm) LLVMDisposeTargetMachine(parts[p].tm);
  }
  free(parts);
  return j;
}

gr_jit_info gr_jit_stats(const gr_jit *j) { return j ? j->info : (gr_jit_info){0}; }

void gr_jit_free(gr_jit *j) {
  if (!j) return;
  if (j->jit) LLVMOrcDisposeLLJIT(j->jit);
  free(j);
}
