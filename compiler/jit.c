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

/* An LLJIT holding obj (consumed), with the step functions' addresses put in progs; NULL after
 * reporting. */
static gr_jit *load_object(LLVMMemoryBufferRef obj, LLVMTargetMachineRef tm_consumed, gr_program *progs, int n_progs, gr_diag *d) {
  gr_jit *j = calloc(1, sizeof *j);
  GR_CHECK(j != NULL, "out of memory");
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm_consumed));
  const char *perf = getenv("GRAFT_PERF");
  if (perf && *perf && strcmp(perf, "0")) LLVMOrcLLJITBuilderSetObjectLinkingLayerCreator(builder, perf_layer, NULL);
  bool ok = !llvm_failed(LLVMOrcCreateLLJIT(&j->jit, builder), d, "JIT creation"); /* consumes builder */
  ok = ok && define_externs(j->jit, d);
  if (ok) {
    ok = !llvm_failed(LLVMOrcLLJITAddObjectFile(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), obj), d, "adding the object");
    obj = NULL; /* owned by the JIT now, even on failure */
  }
  for (int i = 0; ok && i < n_progs; i++) {
    LLVMOrcExecutorAddress addr = 0;
    ok = !llvm_failed(LLVMOrcLLJITLookup(j->jit, &addr, progs[i].name), d, "symbol lookup");
    progs[i].fn = (gr_step_fn)(uintptr_t)addr;
  }
  if (obj) LLVMDisposeMemoryBuffer(obj);
  if (!ok) {
    gr_jit_free(j);
    return NULL;
  }
  return j;
}

gr_jit *gr_jit_compile(gr_graph *g, gr_program *progs, int n_progs, const gr_codegen_opts *o, gr_diag *d) {
  double t0 = gr_now();
  LLVMTargetMachineRef tm = gr_llvm_machine(NULL, NULL, d);
  if (!tm) return NULL;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = gr_codegen_module(ctx, g, progs, n_progs);
  gr_llvm_target(mod, tm);
  char dbuf[4096], path[4300];
  const char *dir = o && (o->no_cache || o->llvm_dump) ? NULL : cache_dir(o, dbuf, sizeof dbuf);
  if (dir && !cache_dir_private(dir, d)) dir = NULL;
  uint8_t key[32];
  LLVMMemoryBufferRef obj = NULL;
  if (dir) {
    cache_key(mod, tm, o, key);
    entry_path(dir, key, path, sizeof path);
    obj = cache_read(path, key, d);
  }
  gr_jit *j = NULL;
  if (obj) { /* a hit: no optimisation, no code generation */
    gr_diag quiet; /* a valid-looking entry LLVM cannot use is not trusted either: compiled again */
    gr_diag_init(&quiet);
    quiet.sink = ignore_diag;
    j = load_object(obj, gr_llvm_machine(NULL, NULL, d), progs, n_progs, &quiet);
    if (!j) gr_warning(d, gr_loc_file(path), "kernel cache entry cannot be loaded: compiling the kernels again");
    gr_diag_free(&quiet);
  }
  bool hit = j != NULL, stored = false;
  if (!j && gr_llvm_optimise(mod, tm, o, d) && (obj = gr_llvm_emit(mod, tm, d))) {
    stored = dir && cache_write(dir, path, key, obj, d);
    j = load_object(obj, gr_llvm_machine(NULL, NULL, d), progs, n_progs, d);
  }
  if (j) j->info = (gr_jit_info){.from_cache = hit, .cached = stored, .seconds = gr_now() - t0};
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  LLVMDisposeTargetMachine(tm);
  return j;
}

gr_jit_info gr_jit_stats(const gr_jit *j) { return j ? j->info : (gr_jit_info){0}; }

void gr_jit_free(gr_jit *j) {
  if (!j) return;
  if (j->jit) LLVMOrcDisposeLLJIT(j->jit);
  free(j);
}
