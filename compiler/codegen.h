/* codegen.h — internal interface between the LLVM IR builder (codegen.c) and the JIT (jit.c). */
#ifndef GRAFT_CODEGEN_H
#define GRAFT_CODEGEN_H
#include <llvm-c/Core.h>
#include "compiler/compiler.h"

/* Builds one module holding a step function per program (named after the program) and the kernels
 * they call. External symbols it references are listed in gr_codegen_externs. */
LLVMModuleRef gr_codegen_module(LLVMContextRef ctx, const gr_graph *g, const gr_program *progs, int n_progs);

typedef struct gr_extern_sym {
  const char *name;
  void *addr;
} gr_extern_sym;
extern const gr_extern_sym gr_codegen_externs[];

#endif
