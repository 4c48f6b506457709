/* jit.c — from LLVM module to callable step functions with ORC LLJIT.
 *
 * Stance (after PostgreSQL's llvmjit.c): the target machine is the host's, named by LLVM 19
 * (LLVMGetHostCPUName/Features), and every module gets its data layout and triple; the O3 pipeline
 * runs with loop and SLP vectorisation, interleaving and unrolling switched on explicitly; the
 * runtime's functions (cblas, libm, mem*) are given to the JIT as absolute symbols, since resolving
 * through the process fails when the linker dropped a library. Ownership: LLVMOrcLLJITAddLLVMIRModule
 * consumes the module even when it fails — it is never touched afterwards. */
#include "compiler/codegen.h"
#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdlib.h>
#include <string.h>

struct gr_jit {
  LLVMOrcLLJITRef jit;
};

/* Reports an LLVM error (consuming it); returns true if there was one. */
static bool llvm_failed(LLVMErrorRef err, gr_diag *d, const char *what) {
  if (!err) return false;
  char *msg = LLVMGetErrorMessage(err);
  gr_error(d, (gr_loc){0}, "LLVM %s failed: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return true;
}

static LLVMTargetMachineRef host_machine(gr_diag *d) {
  static bool init;
  if (!init) {
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    init = true;
  }
  char *triple = LLVMGetDefaultTargetTriple(), *err = NULL;
  LLVMTargetRef target;
  if (LLVMGetTargetFromTriple(triple, &target, &err)) {
    gr_error(d, (gr_loc){0}, "LLVM has no target for %s: %s", triple, err);
    LLVMDisposeMessage(err);
    LLVMDisposeMessage(triple);
    return NULL;
  }
  char *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive,
                                                    LLVMRelocDefault, LLVMCodeModelJITDefault);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  LLVMDisposeMessage(triple);
  return tm;
}

static bool optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, gr_diag *d) {
  LLVMPassBuilderOptionsRef o = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(o, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(o, 1);
  LLVMPassBuilderOptionsSetLoopInterleaving(o, 1);
  LLVMPassBuilderOptionsSetLoopUnrolling(o, 1);
  LLVMErrorRef err = LLVMRunPasses(mod, "default<O3>", tm, o);
  LLVMDisposePassBuilderOptions(o);
  return !llvm_failed(err, d, "optimisation");
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

gr_jit *gr_jit_compile(gr_graph *g, gr_program *progs, int n_progs, const gr_codegen_opts *o, gr_diag *d) {
  LLVMTargetMachineRef tm = host_machine(d);
  if (!tm) return NULL;
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMModuleRef mod = gr_codegen_module(LLVMOrcThreadSafeContextGetContext(tsc), g, progs, n_progs);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  char *dls = LLVMCopyStringRepOfTargetData(dl);
  LLVMSetDataLayout(mod, dls);
  LLVMDisposeMessage(dls);
  LLVMDisposeTargetData(dl);
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(mod, triple);
  LLVMDisposeMessage(triple);
  char *verr = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &verr)) {
    gr_internal_error(__FILE__, __LINE__, "generated LLVM IR does not verify: %s", verr);
  }
  LLVMDisposeMessage(verr);
  bool ok = (o && o->no_opt) || optimise(mod, tm, d);
  if (ok && o && o->llvm_dump) {
    char *s = LLVMPrintModuleToString(mod);
    fputs(s, o->llvm_dump);
    LLVMDisposeMessage(s);
  }
  gr_jit *j = NULL;
  if (ok) {
    j = calloc(1, sizeof *j);
    GR_CHECK(j != NULL, "out of memory");
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMTargetMachineRef jtm = host_machine(d); /* consumed by the builder */
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jtm));
    ok = !llvm_failed(LLVMOrcCreateLLJIT(&j->jit, builder), d, "JIT creation"); /* consumes builder */
    ok = ok && define_externs(j->jit, d);
    if (ok) {
      LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
      mod = NULL; /* owned by tsm, then by the JIT — even if adding fails */
      ok = !llvm_failed(LLVMOrcLLJITAddLLVMIRModule(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), tsm), d, "adding the module");
    }
    for (int i = 0; ok && i < n_progs; i++) {
      LLVMOrcExecutorAddress addr = 0;
      ok = !llvm_failed(LLVMOrcLLJITLookup(j->jit, &addr, progs[i].name), d, "symbol lookup");
      progs[i].fn = (gr_step_fn)(uintptr_t)addr;
    }
  }
  if (mod) LLVMDisposeModule(mod);
  LLVMOrcDisposeThreadSafeContext(tsc);
  LLVMDisposeTargetMachine(tm);
  if (!ok) {
    gr_jit_free(j);
    return NULL;
  }
  return j;
}

void gr_jit_free(gr_jit *j) {
  if (!j) return;
  if (j->jit) LLVMOrcDisposeLLJIT(j->jit);
  free(j);
}
