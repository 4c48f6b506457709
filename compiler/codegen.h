/* codegen.h — internal interface between the LLVM IR builder (codegen.c) and the JIT (jit.c). */
#ifndef GRAFT_CODEGEN_H
#define GRAFT_CODEGEN_H
#include <llvm-c/Core.h>
#include "compiler/compiler.h"

/* Builds one module holding a step function per program (named after the program) and the kernels
 * they call. External symbols it references are listed in gr_codegen_externs. */
LLVMModuleRef gr_codegen_module(LLVMContextRef ctx, const gr_graph *g, const gr_program *progs, int n_progs);

/* jit.c, shared with the ahead-of-time compiler (aot.c): a target machine for the host (cpu and
 * features NULL) or for the named CPU and features, position-independent; a module given its data
 * layout and triple and verified; the O2 pipeline (unless o->no_opt) and o->llvm_dump; the module
 * compiled to an object in memory. */
#include <llvm-c/TargetMachine.h>
LLVMTargetMachineRef gr_llvm_machine(const char *cpu, const char *features, gr_diag *d);
void gr_llvm_target(LLVMModuleRef mod, LLVMTargetMachineRef tm);
bool gr_llvm_optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, const gr_codegen_opts *o, gr_diag *d);
LLVMMemoryBufferRef gr_llvm_emit(LLVMModuleRef mod, LLVMTargetMachineRef tm, gr_diag *d);

typedef struct gr_extern_sym {
  const char *name;
  void *addr;
} gr_extern_sym;
extern const gr_extern_sym gr_codegen_externs[];

#endif
