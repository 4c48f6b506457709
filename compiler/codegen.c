/* codegen.c — LLVM IR for graft programs, through the LLVM C API.
 *
 * Requires: programs whose memory is planned (every value has a slab or arena offset).
 * Guarantees: one module with, per program, `void NAME(ptr slab, ptr arena, i64 n, ptr scalars)`,
 * which runs the program's nodes in order on a batch of n rows. GEMMs call gr_sgemm (f64: cblas_dgemm),
 * a convolution's forward and input-gradient GEMMs gr_sgemm_cb (f64: gr_dgemm_cb) with a generated
 * function that packs their B from the NCHW tensor (`im2col_pack`, `chw_pack`); every other kernel
 * is generated here: elementwise ops as a rows x inner loop nest around the op's scalar emitter,
 * and CUSTOM ops (reductions, softmax/cross-entropy, optimizer updates) by their emitter.
 * Kernels are internal functions with noalias pointers, so LLVM (O2) inlines and vectorises them; nodes
 * with the same op, shapes and attributes share one kernel (fewer functions to optimise).
 * Floating-point arithmetic carries `reassoc contract` (sums vectorise; NaN and Inf still propagate),
 * except elementwise nodes' (see `elementwise`). Fused epilogues (fuse.c) are applied at the anchor's
 * stores (`out_store`); siblings' outputs are written by the anchor's emitter (`sib_ptr`).
 * The graph's float type (f32, or f64 for gradient checks) is used throughout. */
#include "compiler/codegen.h"
#include "runtime/runtime.h"
#include <cblas.h>
#include <llvm-c/DebugInfo.h>
#include <math.h>
#include <string.h>

/* A generated kernel and what determines its code, so that nodes with the same op, shapes and
 * attributes (in any program of the module) share one function. */
typedef struct kernel_entry {
  const char *key;
  LLVMValueRef fn;
} kernel_entry;

/* A fused epilogue (fuse.c) while its anchor's kernel is generated: the chain's nodes, which input of
 * each is the value coming down the chain, and the pointers to their other operands, in order
 * (parameters of the kernel; of the body, inside a parallel loop). */
typedef struct cg_epi {
  const gr_node *const *nodes;
  int n, slot[GR_FUSE_MAX];
  const gr_node *anchor;
  const gr_node *const *sib; /* or siblings (gr_fuse_siblings): each one's output, then its inputs */
  int n_sib;                 /* the anchor does not read, in ptr[] */
  int n_ptr;
  LLVMValueRef ptr[GR_FUSE_MAX_OPERANDS];
  bool used; /* the anchor's emitter stored through out_store, or asked for its siblings' outputs */
} cg_epi;

typedef struct gr_cg {
  cg_epi *epi;
  bool plain; /* elementwise arithmetic: no fast-math flags (see elementwise) */
  int vlanes; /* > 0 while a vector epilogue is emitted: fconst gives vectors of this many lanes */
  bool no_unroll; /* the loops being generated are not to be unrolled (loop_end; see shared_kernel) */
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMTypeRef ft, i64, i32, ptr, voidt, f32;
  const gr_graph *g;
  kernel_entry *kernels;
  int n_kernels, cap_kernels;
} gr_cg;

/* Emitters: ELEM ops get scalar operands and return the scalar result. CUSTOM ops get
 * [input pointers..., output pointer (NULL for updates), n (i64), scalars pointer, scratch pointer]
 * and emit the body. */
typedef LLVMValueRef (*emit_fn)(gr_cg *cg, const gr_node *n, LLVMValueRef *args);

/* ---- small builders ---------------------------------------------------------------------------- */

static LLVMValueRef fm(gr_cg *c, LLVMValueRef v) {
  if (!c->plain && LLVMIsAInstruction(v) && LLVMCanValueUseFastMathFlags(v))
    LLVMSetFastMathFlags(v, LLVMFastMathAllowReassoc | LLVMFastMathAllowContract);
  return v;
}
static LLVMValueRef fadd(gr_cg *c, LLVMValueRef a, LLVMValueRef b) { return fm(c, LLVMBuildFAdd(c->b, a, b, "")); }
static LLVMValueRef fsub(gr_cg *c, LLVMValueRef a, LLVMValueRef b) { return fm(c, LLVMBuildFSub(c->b, a, b, "")); }
static LLVMValueRef fmul(gr_cg *c, LLVMValueRef a, LLVMValueRef b) { return fm(c, LLVMBuildFMul(c->b, a, b, "")); }
static LLVMValueRef fdiv(gr_cg *c, LLVMValueRef a, LLVMValueRef b) { return fm(c, LLVMBuildFDiv(c->b, a, b, "")); }
/* v in each of `lanes` lanes (at most 64). */
static LLVMValueRef splat(gr_cg *c, LLVMValueRef v, int lanes) {
  LLVMValueRef all[64];
  for (int i = 0; i < lanes; i++) all[i] = v;
  if (LLVMIsConstant(v)) return LLVMConstVector(all, (unsigned)lanes);
  LLVMValueRef zero = LLVMConstInt(c->i32, 0, 0), one = LLVMBuildInsertElement(c->b, LLVMGetUndef(LLVMVectorType(LLVMTypeOf(v), 1)), v, zero, "");
  for (int i = 0; i < lanes; i++) all[i] = zero;
  return LLVMBuildShuffleVector(c->b, one, one, LLVMConstVector(all, (unsigned)lanes), "");
}
/* A float constant; a splat while a vector epilogue is emitted (out_store_n). */
static LLVMValueRef fconst(gr_cg *c, double x) {
  LLVMValueRef v = LLVMConstReal(c->ft, x);
  return c->vlanes ? splat(c, v, c->vlanes) : v;
}
static LLVMValueRef iconst(gr_cg *c, int64_t x) { return LLVMConstInt(c->i64, (unsigned long long)x, 1); }
static LLVMValueRef iadd(gr_cg *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWAdd(c->b, a, b, ""); }
static LLVMValueRef imul(gr_cg *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWMul(c->b, a, b, ""); }

static LLVMValueRef elem_ptr(gr_cg *c, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(c->b, t, base, &idx, 1, "");
}
static LLVMValueRef loadf(gr_cg *c, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildLoad2(c->b, c->ft, elem_ptr(c, c->ft, base, idx), "");
}
static void storef(gr_cg *c, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx) {
  LLVMBuildStore(c->b, v, elem_ptr(c, c->ft, base, idx));
}
static LLVMValueRef fptr(gr_cg *c, LLVMValueRef base, LLVMValueRef idx) { return elem_ptr(c, c->ft, base, idx); }
static LLVMValueRef raw_fptr(gr_cg *c, LLVMValueRef base, LLVMValueRef idx) { /* may point before base: no inbounds */
  return LLVMBuildGEP2(c->b, c->ft, base, &idx, 1, "");
}

static LLVMValueRef intrinsic(gr_cg *c, const char *name, LLVMValueRef *args, int n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  GR_CHECK(id != 0, "no LLVM intrinsic %s", name);
  LLVMTypeRef t = c->ft;
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->mod, id, &t, 1);
  LLVMTypeRef fty = LLVMIntrinsicGetType(c->ctx, id, &t, 1);
  return fm(c, LLVMBuildCall2(c->b, fty, fn, args, (unsigned)n, ""));
}

/* A libm function of the graph's float type (f suffix for f32), resolved by the JIT's symbol table. */
static LLVMValueRef libm(gr_cg *c, const char *name, LLVMValueRef x) {
  char full[32];
  snprintf(full, sizeof full, "%s%s", name, c->ft == c->f32 ? "f" : "");
  LLVMTypeRef fty = LLVMFunctionType(c->ft, &c->ft, 1, 0);
  LLVMValueRef fn = LLVMGetNamedFunction(c->mod, full);
  if (!fn) fn = LLVMAddFunction(c->mod, full, fty);
  return LLVMBuildCall2(c->b, fty, fn, &x, 1, "");
}

static LLVMValueRef fexp(gr_cg *c, LLVMValueRef x) { return intrinsic(c, "llvm.exp", &x, 1); }
static LLVMValueRef flog(gr_cg *c, LLVMValueRef x) { return intrinsic(c, "llvm.log", &x, 1); }

/* ---- loops ------------------------------------------------------------------------------------- */

typedef struct cg_loop {
  LLVMBasicBlockRef header, body, exit;
  LLVMValueRef i;
  int n_carry;
  LLVMValueRef carry_phi[4], carry_next[4];
} cg_loop;

/* A loop ID that keeps LLVM from unrolling its loop: a distinct node whose first operand is itself,
 * then the option (LangRef, "llvm.loop"); one per loop. */
static LLVMMetadataRef no_unroll(gr_cg *c) {
  LLVMMetadataRef tmp = LLVMTemporaryMDNode(c->ctx, NULL, 0), opt = LLVMMDStringInContext2(c->ctx, "llvm.loop.unroll.disable", 24);
  LLVMMetadataRef ops[2] = {tmp, LLVMMDNodeInContext2(c->ctx, &opt, 1)};
  LLVMMetadataRef id = LLVMMDNodeInContext2(c->ctx, ops, 2);
  LLVMReplaceMDNodeOperandWith(LLVMMetadataAsValue(c->ctx, id), 0, id);
  LLVMDisposeTemporaryMDNode(tmp);
  return id;
}

/* for (i = 0; i < count; i++) — leaves the builder in the body. */
static void loop_begin(gr_cg *c, cg_loop *L, LLVMValueRef count) {
  memset(L, 0, sizeof *L);
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
  LLVMValueRef fn = LLVMGetBasicBlockParent(pre);
  L->header = LLVMAppendBasicBlockInContext(c->ctx, fn, "loop");
  L->body = LLVMAppendBasicBlockInContext(c->ctx, fn, "body");
  L->exit = LLVMAppendBasicBlockInContext(c->ctx, fn, "done");
  LLVMBuildBr(c->b, L->header);
  LLVMPositionBuilderAtEnd(c->b, L->header);
  L->i = LLVMBuildPhi(c->b, c->i64, "i");
  LLVMValueRef zero = iconst(c, 0);
  LLVMAddIncoming(L->i, &zero, &pre, 1);
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, L->i, count, ""), L->body, L->exit);
  LLVMPositionBuilderAtEnd(c->b, L->body);
}

/* A loop-carried value: starts at init; set its next value with loop_carry; after loop_end the phi
 * holds the final value. */
static LLVMValueRef loop_phi(gr_cg *c, cg_loop *L, LLVMTypeRef t, LLVMValueRef init) {
  LLVMBuilderRef tmp = LLVMCreateBuilderInContext(c->ctx);
  LLVMPositionBuilderBefore(tmp, L->i);
  LLVMValueRef phi = LLVMBuildPhi(tmp, t, "acc");
  LLVMDisposeBuilder(tmp);
  LLVMBasicBlockRef pre = LLVMGetIncomingBlock(L->i, 0);
  LLVMAddIncoming(phi, &init, &pre, 1);
  GR_ASSERT(L->n_carry < 4);
  L->carry_phi[L->n_carry] = phi;
  L->carry_next[L->n_carry++] = NULL;
  return phi;
}

static void loop_carry(cg_loop *L, LLVMValueRef phi, LLVMValueRef next) {
  for (int k = 0; k < L->n_carry; k++)
    if (L->carry_phi[k] == phi) L->carry_next[k] = next;
}

static void loop_end(gr_cg *c, cg_loop *L) {
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(c->b);
  LLVMValueRef next = iadd(c, L->i, iconst(c, 1));
  LLVMAddIncoming(L->i, &next, &latch, 1);
  for (int k = 0; k < L->n_carry; k++) {
    GR_ASSERT(L->carry_next[k] != NULL);
    LLVMAddIncoming(L->carry_phi[k], &L->carry_next[k], &latch, 1);
  }
  LLVMValueRef back = LLVMBuildBr(c->b, L->header);
  if (c->no_unroll) LLVMSetMetadata(back, LLVMGetMDKindIDInContext(c->ctx, "llvm.loop", 9), LLVMMetadataAsValue(c->ctx, no_unroll(c)));
  LLVMPositionBuilderAtEnd(c->b, L->exit);
}

/* A mutable scalar: a stack slot in the function's entry block (LLVM promotes it to registers). */
/* A stack slot in the current function's entry block. */
static LLVMValueRef entry_alloca(gr_cg *c, LLVMTypeRef t) {
  LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(c->b));
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(fn);
  LLVMBuilderRef tmp = LLVMCreateBuilderInContext(c->ctx);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(tmp, first);
  else
    LLVMPositionBuilderAtEnd(tmp, entry);
  LLVMValueRef slot = LLVMBuildAlloca(tmp, t, "var");
  LLVMDisposeBuilder(tmp);
  return slot;
}

static LLVMValueRef cg_var(gr_cg *c, LLVMTypeRef t, LLVMValueRef init) {
  LLVMValueRef slot = entry_alloca(c, t);
  LLVMBuildStore(c->b, init, slot);
  return slot;
}

/* ---- parallel loops ---------------------------------------------------------------------------- */

/* for (i = 0; i < count; i++) with independent iterations, split into contiguous ranges across
 * graft's thread pool (runtime/pool.c). The body goes into a function of its own,
 *   void <kernel>.body(vals..., i64 lo, i64 hi)   (pointer values noalias unless in alias_mask),
 * called through a trampoline <kernel>.part(ctx, part, parts) that gr_parallel_for runs on each
 * part. So the body may use only the values par_begin was given: it replaces each *vals[k] by the
 * body's parameter, and par_end puts the caller's values back. `cost` estimates one iteration's work
 * in elements; the runtime runs small loops in the calling thread. Every iteration writes its own
 * outputs, so the results do not depend on how the range is split. */
#define PAR_MAX (12 + GR_FUSE_MAX_OPERANDS)
typedef struct cg_par {
  cg_loop L;
  LLVMValueRef i; /* the iteration index, in the body */
  LLVMBasicBlockRef resume;
  LLVMValueRef body, count, outer[PAR_MAX + 1], *vals[PAR_MAX];
  int nv;
  int64_t cost;
} cg_par;

static LLVMValueRef named_fn(gr_cg *c, const char *suffix, LLVMTypeRef fty) {
  size_t len;
  const char *base = LLVMGetValueName2(LLVMGetBasicBlockParent(LLVMGetInsertBlock(c->b)), &len);
  char name[128];
  snprintf(name, sizeof name, "%.*s.%s", (int)(len < 100 ? len : 100), base, suffix);
  LLVMValueRef fn = LLVMAddFunction(c->mod, name, fty);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  return fn;
}

/* par_begin without its loop: the builder is at the body function's start, where values every
 * iteration uses can be computed once per part; par_loop then opens the loop. */
static void par_enter(gr_cg *c, cg_par *P, LLVMValueRef count, LLVMValueRef **given, int ng, int64_t cost, unsigned alias_mask) {
  LLVMValueRef **vals = given, *all[PAR_MAX];
  int nv = ng;
  if (c->epi && c->epi->n_ptr) { /* a fused epilogue's operands go along */
    GR_ASSERT(ng + c->epi->n_ptr <= PAR_MAX);
    memcpy(all, given, sizeof(LLVMValueRef *) * (size_t)ng);
    for (int k = 0; k < c->epi->n_ptr; k++) all[nv++] = &c->epi->ptr[k];
    vals = all;
  }
  GR_ASSERT(nv <= PAR_MAX);
  memset(P, 0, sizeof *P);
  P->resume = LLVMGetInsertBlock(c->b);
  P->count = count;
  P->nv = nv;
  P->cost = cost;
  LLVMTypeRef pt[PAR_MAX + 2];
  for (int k = 0; k < nv; k++) {
    P->vals[k] = vals[k];
    P->outer[k] = *vals[k];
    pt[k] = LLVMTypeOf(*vals[k]);
  }
  pt[nv] = pt[nv + 1] = c->i64;
  P->body = named_fn(c, "body", LLVMFunctionType(c->voidt, pt, (unsigned)nv + 2, 0));
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (int k = 0; k < nv; k++)
    if (pt[k] == c->ptr && !(alias_mask >> k & 1))
      LLVMAddAttributeAtIndex(P->body, (unsigned)k + 1, LLVMCreateEnumAttribute(c->ctx, noalias, 0));
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, P->body, "entry"));
  for (int k = 0; k < nv; k++) *vals[k] = LLVMGetParam(P->body, (unsigned)k);
}

static void par_loop(gr_cg *c, cg_par *P) {
  LLVMValueRef lo = LLVMGetParam(P->body, (unsigned)P->nv), hi = LLVMGetParam(P->body, (unsigned)P->nv + 1);
  loop_begin(c, &P->L, LLVMBuildNSWSub(c->b, hi, lo, ""));
  P->i = iadd(c, lo, P->L.i);
}

static void par_begin(gr_cg *c, cg_par *P, LLVMValueRef count, LLVMValueRef **vals, int nv, int64_t cost, unsigned alias_mask) {
  par_enter(c, P, count, vals, nv, cost, alias_mask);
  par_loop(c, P);
}

/* Values handed to an outlined function (a parallel body's trampoline, a pack function) through a
 * ctx pointer: one i64 slot each, pointers as integers. slots_store fills them in the caller (an
 * entry-block array); slot_load reads slot k back as type t in the outlined function. */
static LLVMValueRef slots_store(gr_cg *c, const LLVMValueRef *v, int n) {
  LLVMValueRef slots = entry_alloca(c, LLVMArrayType(c->i64, (unsigned)n));
  for (int k = 0; k < n; k++) {
    LLVMValueRef x = LLVMTypeOf(v[k]) == c->ptr ? LLVMBuildPtrToInt(c->b, v[k], c->i64, "") : v[k];
    LLVMBuildStore(c->b, x, elem_ptr(c, c->i64, slots, iconst(c, k)));
  }
  return slots;
}
static LLVMValueRef slot_load(gr_cg *c, LLVMValueRef ctx, int k, LLVMTypeRef t) {
  LLVMValueRef v = LLVMBuildLoad2(c->b, c->i64, elem_ptr(c, c->i64, ctx, iconst(c, k)), "");
  return t == c->ptr ? LLVMBuildIntToPtr(c->b, v, c->ptr, "") : v;
}

static void par_end(gr_cg *c, cg_par *P) {
  loop_end(c, &P->L);
  LLVMBuildRetVoid(c->b);
  /* the trampoline: unpacks the values from ctx (one i64 slot each, then count) and calls the body
   * on its part of [0, count) */
  LLVMTypeRef tp[3] = {c->ptr, c->i64, c->i64};
  LLVMTypeRef tfty = LLVMFunctionType(c->voidt, tp, 3, 0);
  LLVMValueRef tramp = named_fn(c, "part", tfty);
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, tramp, "entry"));
  LLVMValueRef ctx = LLVMGetParam(tramp, 0), part = LLVMGetParam(tramp, 1), parts = LLVMGetParam(tramp, 2);
  LLVMValueRef args[PAR_MAX + 2];
  for (int k = 0; k <= P->nv; k++) args[k] = slot_load(c, ctx, k, k < P->nv ? LLVMTypeOf(P->outer[k]) : c->i64);
  LLVMValueRef count = args[P->nv];
  args[P->nv] = LLVMBuildSDiv(c->b, imul(c, count, part), parts, "lo");
  args[P->nv + 1] = LLVMBuildSDiv(c->b, imul(c, count, iadd(c, part, iconst(c, 1))), parts, "hi");
  LLVMBuildCall2(c->b, LLVMGlobalGetValueType(P->body), P->body, args, (unsigned)P->nv + 2, "");
  LLVMBuildRetVoid(c->b);
  /* back in the caller: pack ctx and run the parts */
  LLVMPositionBuilderAtEnd(c->b, P->resume);
  for (int k = 0; k < P->nv; k++) *P->vals[k] = P->outer[k];
  P->outer[P->nv] = P->count; /* the last slot */
  LLVMValueRef slots = slots_store(c, P->outer, P->nv + 1);
  LLVMTypeRef rp[4] = {c->ptr, c->ptr, c->i64, c->i64};
  LLVMTypeRef rfty = LLVMFunctionType(c->voidt, rp, 4, 0);
  LLVMValueRef run = LLVMGetNamedFunction(c->mod, "gr_parallel_for");
  if (!run) run = LLVMAddFunction(c->mod, "gr_parallel_for", rfty);
  LLVMValueRef rargs[4] = {tramp, slots, P->count, iconst(c, P->cost)};
  LLVMBuildCall2(c->b, rfty, run, rargs, 4, "");
}

/* ---- fused epilogues ---------------------------------------------------------------------------- */

static int64_t spatial(const gr_shape *s);

static const emit_fn emitters[GR_OP_COUNT];

/* Vectors for the 2-wide tiled pooling kernels: lane masks, loads and stores of `lanes` elements of
 * which the first `active` are real (masked at the end of a row), and shuffles. */
static LLVMValueRef lane_mask(gr_cg *c, int lanes, int64_t active) {
  LLVMValueRef b[64];
  for (int i = 0; i < lanes; i++) b[i] = LLVMConstInt(LLVMInt1TypeInContext(c->ctx), i < active, 0);
  return LLVMConstVector(b, (unsigned)lanes);
}
static LLVMValueRef isplat(gr_cg *c, int64_t k) { return splat(c, LLVMConstInt(c->i32, (unsigned long long)k, 0), 16); }
static unsigned elem_align(const gr_cg *c) { return c->ft == c->f32 ? 4 : 8; }
static LLVMValueRef masked_op(gr_cg *c, const char *name, LLVMTypeRef vt, LLVMValueRef *args, int n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef ov[2] = {vt, c->ptr};
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->mod, id, ov, 2);
  return LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->ctx, id, ov, 2), fn, args, (unsigned)n, "");
}
static LLVMValueRef vload(gr_cg *c, LLVMValueRef base, LLVMValueRef idx, int lanes, int64_t active) {
  LLVMTypeRef vt = LLVMVectorType(c->ft, (unsigned)lanes);
  LLVMValueRef p = fptr(c, base, idx);
  if (active == lanes) {
    LLVMValueRef v = LLVMBuildLoad2(c->b, vt, p, "");
    LLVMSetAlignment(v, elem_align(c));
    return v;
  }
  LLVMValueRef args[4] = {p, LLVMConstInt(c->i32, elem_align(c), 0), lane_mask(c, lanes, active), LLVMConstNull(vt)};
  return masked_op(c, "llvm.masked.load", vt, args, 4);
}
static void vstore(gr_cg *c, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx, int lanes, int64_t active) {
  LLVMValueRef p = fptr(c, base, idx);
  if (active == lanes) {
    LLVMSetAlignment(LLVMBuildStore(c->b, v, p), elem_align(c));
    return;
  }
  LLVMValueRef args[4] = {v, p, LLVMConstInt(c->i32, elem_align(c), 0), lane_mask(c, lanes, active)};
  masked_op(c, "llvm.masked.store", LLVMTypeOf(v), args, 4);
}
/* lanes of a (and b): take from concatenated [a, b] lane first + step*i, i < n */
static LLVMValueRef shuffle(gr_cg *c, LLVMValueRef a, LLVMValueRef b, int n, const int *pick) {
  LLVMValueRef m[64];
  for (int i = 0; i < n; i++) m[i] = LLVMConstInt(c->i32, (unsigned long long)pick[i], 0);
  return LLVMBuildShuffleVector(c->b, a, b, LLVMConstVector(m, (unsigned)n), "");
}

/* The arithmetic of an elementwise node (ELEM ops, and bias_add in an epilogue), without `reassoc
 * contract`, fused or not: a fused epilogue hands each node the previous node's result directly
 * instead of through memory, and with the flags on both sides LLVM could fuse a multiply into the
 * next node's add (one rounding instead of two), reassociate across the boundary or turn (1/y)*z into
 * z/y, so the fused kernel would round differently from the unfused program. Elementwise loops
 * vectorise without the flags (only reductions need them); llvm.arithmetic.fence would have kept the
 * flags but stopped the loop vectoriser. */
static LLVMValueRef elementwise(gr_cg *c, const gr_node *m, LLVMValueRef *in) {
  c->plain = true;
  LLVMValueRef v = m->op == GR_OP_BIAS_ADD ? fadd(c, in[0], in[1]) : emitters[m->op](c, m, in);
  c->plain = false;
  return v;
}

/* Stores the anchor's output at out[idx]: v is one element (lanes 0), or `lanes` consecutive ones of
 * which the first `active` are real, all of channel ch. Through the fused epilogue, if there is one:
 * each of its nodes applied in turn, its other operands read at idx (bias_add's at the channel: ch,
 * or computed from idx when the caller passes NULL). */
static void out_store_n(gr_cg *c, LLVMValueRef v, LLVMValueRef out, LLVMValueRef idx, int lanes, int64_t active, LLVMValueRef ch) {
  cg_epi *e = c->epi;
  if (e) {
    e->used = true;
    for (int k = 0, p = 0; k < e->n; k++) {
      const gr_node *m = e->nodes[k];
      LLVMValueRef in[GR_MAX_IN];
      for (int j = 0; j < m->n_in; j++) {
        if (j == e->slot[k]) {
          in[j] = v;
        } else if (m->op == GR_OP_BIAS_ADD) {
          const gr_shape *s = &m->in[0]->shape;
          in[j] = loadf(c, e->ptr[p++], ch ? ch : LLVMBuildSRem(c->b, LLVMBuildSDiv(c->b, idx, iconst(c, spatial(s)), ""), iconst(c, s->dim[1]), ""));
          if (lanes) in[j] = splat(c, in[j], lanes); /* the channel's bias in every lane */
        } else {
          in[j] = lanes ? vload(c, e->ptr[p++], idx, lanes, active) : loadf(c, e->ptr[p++], idx);
        }
      }
      c->vlanes = lanes;
      v = elementwise(c, m, in);
      c->vlanes = 0;
    }
  }
  if (lanes)
    vstore(c, v, out, idx, lanes, active);
  else
    storef(c, v, out, idx);
}
static void out_store(gr_cg *c, LLVMValueRef v, LLVMValueRef out, LLVMValueRef idx, LLVMValueRef ch) {
  out_store_n(c, v, out, idx, 0, 0, ch);
}

/* Whether the anchor reads v. A sibling's inputs that it does not read reach the fused kernel as
 * parameters after the sibling's output. */
static bool anchor_reads(const gr_node *anchor, const gr_value *v) {
  for (int j = 0; j < anchor->n_in; j++)
    if (anchor->in[j] == v) return true;
  return false;
}

/* For the anchor's sibling with op `op` (fused into its kernel): its output (which 0), or its k-th
 * input the anchor does not read (which k); NULL without such a sibling. */
static LLVMValueRef sib_ptr(gr_cg *c, gr_op op, int which) {
  cg_epi *e = c->epi;
  for (int k = 0, p = 0; e && k < e->n_sib; k++) {
    if (e->sib[k]->op == op) {
      e->used = true;
      return e->ptr[p + which];
    }
    p++;
    for (int j = 0; j < e->sib[k]->n_in; j++) p += !anchor_reads(e->anchor, e->sib[k]->in[j]);
  }
  return NULL;
}
static LLVMValueRef sib_out(gr_cg *c, gr_op op) { return sib_ptr(c, op, 0); }

/* Moves the epilogue's element-indexed operand pointers by off elements (a convolution's chunk of
 * samples, whose output it stores from offset off), saving them to restore with epi_restore. */
static void epi_shift(gr_cg *c, LLVMValueRef off, LLVMValueRef *saved) {
  cg_epi *e = c->epi;
  if (!e) return;
  for (int k = 0, p = 0; k < e->n; k++)
    for (int j = 0; j < e->nodes[k]->n_in; j++) {
      if (j == e->slot[k]) continue;
      saved[p] = e->ptr[p];
      if (e->nodes[k]->op != GR_OP_BIAS_ADD) e->ptr[p] = fptr(c, e->ptr[p], off);
      p++;
    }
}
static void epi_restore(gr_cg *c, const LLVMValueRef *saved) {
  if (c->epi) memcpy(c->epi->ptr, saved, sizeof(LLVMValueRef) * (size_t)c->epi->n_ptr);
}

/* ---- elementwise emitters (ops.def column) ----------------------------------------------------- */

static LLVMValueRef emit_add(gr_cg *c, const gr_node *n, LLVMValueRef *a) { (void)n; return fadd(c, a[0], a[1]); }

static LLVMValueRef emit_mul(gr_cg *c, const gr_node *n, LLVMValueRef *a) { (void)n; return fmul(c, a[0], a[1]); }

/* x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 */
static LLVMValueRef emit_gelu(gr_cg *c, const gr_node *n, LLVMValueRef *a) {
  (void)n;
  LLVMValueRef phi = fmul(c, fconst(c, 0.5), fadd(c, fconst(c, 1), libm(c, "erf", fmul(c, a[0], fconst(c, M_SQRT1_2)))));
  return fmul(c, a[0], phi);
}

/* (x, dy) -> dy (Phi(x) + x exp(-x^2/2) / sqrt(2 pi)) */
static LLVMValueRef emit_gelu_grad(gr_cg *c, const gr_node *n, LLVMValueRef *a) {
  (void)n;
  LLVMValueRef x = a[0];
  LLVMValueRef phi = fmul(c, fconst(c, 0.5), fadd(c, fconst(c, 1), libm(c, "erf", fmul(c, x, fconst(c, M_SQRT1_2)))));
  LLVMValueRef pdf = fmul(c, fexp(c, fmul(c, fconst(c, -0.5), fmul(c, x, x))), fconst(c, 0.3989422804014327));
  return fmul(c, a[1], fadd(c, phi, fmul(c, x, pdf)));
}

/* y[i] = keep(i) ? x[i] / (1 - p) : 0, keep(i) = U(seed, salt, i) >= p, U from a splitmix64 hash of
 * the step's seed (scalars[GR_SCALAR_SEED]), the layer's salt and the element index: the backward
 * pass recomputes the same mask, so nothing is saved. */
static LLVMValueRef emit_dropout(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], y = a[1], n = a[2], scal = a[3];
  LLVMValueRef seed = LLVMBuildFPToUI(c->b, LLVMBuildLoad2(c->b, c->f32, elem_ptr(c, c->f32, scal, iconst(c, GR_SCALAR_SEED)), ""), c->i64, "");
  LLVMValueRef key = LLVMBuildXor(c->b, LLVMBuildMul(c->b, seed, iconst(c, (int64_t)0x9E3779B97F4A7C15ULL), ""),
                                  iconst(c, (int64_t)(0xD1B54A32D192ED03ULL * (uint64_t)(nd->a.salt + 1))), "");
  double p = nd->a.drop_p;
  LLVMValueRef thresh = iconst(c, (int64_t)(p * 16777216.0)), scale = fconst(c, 1.0 / (1.0 - p));
  cg_loop L;
  int64_t inner = gr_shape_inner(&nd->in[0]->shape);
  loop_begin(c, &L, gr_shape_has_batch(&nd->in[0]->shape) ? imul(c, n, iconst(c, inner)) : iconst(c, inner));
  LLVMValueRef z = LLVMBuildAdd(c->b, key, LLVMBuildMul(c->b, L.i, iconst(c, (int64_t)0x9E3779B97F4A7C15ULL), ""), "");
  z = LLVMBuildMul(c->b, LLVMBuildXor(c->b, z, LLVMBuildLShr(c->b, z, iconst(c, 30), ""), ""), iconst(c, (int64_t)0xBF58476D1CE4E5B9ULL), "");
  z = LLVMBuildMul(c->b, LLVMBuildXor(c->b, z, LLVMBuildLShr(c->b, z, iconst(c, 27), ""), ""), iconst(c, (int64_t)0x94D049BB133111EBULL), "");
  z = LLVMBuildXor(c->b, z, LLVMBuildLShr(c->b, z, iconst(c, 31), ""), "");
  LLVMValueRef u = LLVMBuildLShr(c->b, z, iconst(c, 40), ""); /* 24 uniform bits */
  LLVMValueRef keep = LLVMBuildICmp(c->b, LLVMIntUGE, u, thresh, "");
  storef(c, LLVMBuildSelect(c->b, keep, fmul(c, loadf(c, x, L.i), scale), fconst(c, 0), ""), y, L.i);
  loop_end(c, &L);
  return NULL;
}

/* dx = -lambda dy, lambda = scalars[GR_SCALAR_LAMBDA] */
static LLVMValueRef emit_grad_reverse_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef dy = a[0], dx = a[1], n = a[2], scal = a[3];
  LLVMValueRef lam = LLVMBuildLoad2(c->b, c->f32, elem_ptr(c, c->f32, scal, iconst(c, GR_SCALAR_LAMBDA)), "lambda");
  if (c->ft != c->f32) lam = LLVMBuildFPExt(c->b, lam, c->ft, "");
  LLVMValueRef k = LLVMBuildFNeg(c->b, lam, "");
  int64_t inner = gr_shape_inner(&nd->in[0]->shape);
  cg_loop L;
  loop_begin(c, &L, gr_shape_has_batch(&nd->in[0]->shape) ? imul(c, n, iconst(c, inner)) : iconst(c, inner));
  storef(c, fmul(c, loadf(c, dy, L.i), k), dx, L.i);
  loop_end(c, &L);
  return NULL;
}

static LLVMValueRef emit_relu(gr_cg *c, const gr_node *n, LLVMValueRef *a) {
  (void)n; /* x < 0 ? 0 : x — a NaN stays NaN */
  return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOLT, a[0], fconst(c, 0), ""), fconst(c, 0), a[0], "");
}

static LLVMValueRef emit_relu_grad(gr_cg *c, const gr_node *n, LLVMValueRef *a) {
  (void)n; /* (y, dy) -> y > 0 ? dy : 0 */
  return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, a[0], fconst(c, 0), ""), a[1], fconst(c, 0), "");
}

static LLVMValueRef emit_sigmoid(gr_cg *c, const gr_node *n, LLVMValueRef *a) {
  (void)n; /* 1 / (1 + e^-x) */
  return fdiv(c, fconst(c, 1), fadd(c, fconst(c, 1), fexp(c, fm(c, LLVMBuildFNeg(c->b, a[0], "")))));
}

static LLVMValueRef emit_sigmoid_grad(gr_cg *c, const gr_node *n, LLVMValueRef *a) {
  (void)n; /* (y, dy) -> dy * y * (1 - y) */
  return fmul(c, a[1], fmul(c, a[0], fsub(c, fconst(c, 1), a[0])));
}

static LLVMValueRef emit_tanh(gr_cg *c, const gr_node *n, LLVMValueRef *a) {
  (void)n; /* tanh x = sign(x) * -t / (2 + t), t = expm1(-2|x|): accurate near 0, saturates cleanly */
  LLVMValueRef ax = intrinsic(c, "llvm.fabs", &a[0], 1);
  LLVMValueRef t = libm(c, "expm1", fmul(c, fconst(c, -2), ax));
  LLVMValueRef r = fdiv(c, fm(c, LLVMBuildFNeg(c->b, t, "")), fadd(c, fconst(c, 2), t));
  LLVMValueRef args[2] = {r, a[0]};
  return intrinsic(c, "llvm.copysign", args, 2);
}

static LLVMValueRef emit_tanh_grad(gr_cg *c, const gr_node *n, LLVMValueRef *a) {
  (void)n; /* (y, dy) -> dy * (1 - y^2) */
  return fmul(c, a[1], fsub(c, fconst(c, 1), fmul(c, a[0], a[0])));
}

/* ---- custom emitters --------------------------------------------------------------------------- */

static LLVMValueRef rows_of(gr_cg *c, const gr_shape *s, LLVMValueRef n) {
  return gr_shape_has_batch(s) ? n : iconst(c, 1);
}

/* Elements per channel of [N, C, ...]: the product of the dimensions after 1. */
static int64_t spatial(const gr_shape *s) {
  int64_t k = 1;
  for (int i = 2; i < s->rank; i++) k *= s->dim[i];
  return k;
}

/* y[n, c, s] = x[n, c, s] + b[c] */
static LLVMValueRef emit_bias_add(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], b = a[1], out = a[2], n = a[3];
  int64_t C = nd->in[0]->shape.dim[1], S = spatial(&nd->in[0]->shape);
  cg_loop R, K, L;
  loop_begin(c, &R, n);
  loop_begin(c, &K, iconst(c, C));
  LLVMValueRef base = imul(c, iadd(c, imul(c, R.i, iconst(c, C)), K.i), iconst(c, S)), bk = loadf(c, b, K.i);
  loop_begin(c, &L, iconst(c, S));
  LLVMValueRef idx = iadd(c, base, L.i);
  out_store(c, fadd(c, loadf(c, x, idx), bk), out, idx, K.i);
  loop_end(c, &L);
  loop_end(c, &K);
  loop_end(c, &R);
  return NULL;
}

/* ---- per-channel kernels: batchnorm and bias_grad ----
 *
 * They run over channels in parallel. A channel of x [N, C, S] is N rows of S floats, C*S floats
 * apart. Walked one channel at a time, a small S (the deep layers of small images: S = 4 or 16;
 * batchnorm over [N, C]: S = 1) reads a few floats per cache line, from lines a multiple of 4 KiB
 * apart, and ran 20-30 times slower per element than the large S of the first layers. So channels go
 * in blocks of B = ceil(256 / S) (B = 1 when S >= 256): sample by sample, a block's B*S floats are
 * contiguous. Per-channel values (mean, variance, scale) live in arrays of B. Every channel's sums
 * are taken in one order (samples, then positions), whatever the thread count, and fused kernels
 * (batchnorm's gradient with its siblings) take them as the lone kernels do. */
typedef struct chan_blk {
  int64_t C, S, B;
  LLVMValueRef c0, nb; /* the block's first channel and its number of channels */
} chan_blk;

static int64_t chan_block(int64_t C, int64_t S) {
  int64_t b = S >= 256 ? 1 : (256 + S - 1) / S;
  return b < C ? b : C;
}

/* Opens the parallel loop over the blocks of the channels of shape s (cost: passes over the data). */
static void blk_begin(gr_cg *c, cg_par *P, chan_blk *k, const gr_shape *s, LLVMValueRef **vals, int nv, int64_t passes) {
  k->C = s->dim[1], k->S = spatial(s), k->B = chan_block(k->C, k->S);
  par_begin(c, P, iconst(c, (k->C + k->B - 1) / k->B), vals, nv, passes * k->S * k->B * 64, 0);
  k->c0 = imul(c, P->i, iconst(c, k->B));
  LLVMValueRef left = LLVMBuildNSWSub(c->b, iconst(c, k->C), k->c0, "");
  k->nb = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, left, iconst(c, k->B), ""), left, iconst(c, k->B), "");
}

/* An array of one value per channel of the block. */
static LLVMValueRef blk_arr(gr_cg *c, const chan_blk *k) { return entry_alloca(c, LLVMArrayType(c->ft, (unsigned)k->B)); }

/* for (cc = 0; cc < nb; cc++): the block's channels, ch = c0 + cc */
typedef struct blk_chans {
  cg_loop L;
  LLVMValueRef cc, ch;
} blk_chans;
static void chans_begin(gr_cg *c, blk_chans *q, const chan_blk *k) {
  loop_begin(c, &q->L, k->nb);
  q->cc = q->L.i;
  q->ch = iadd(c, k->c0, q->cc);
}

/* The block's elements, sample by sample: idx of x, its channel ch and cc. */
typedef struct blk_iter {
  cg_loop R;
  blk_chans q;
  cg_loop L;
  LLVMValueRef idx;
} blk_iter;
static void iter_begin(gr_cg *c, blk_iter *it, const chan_blk *k, LLVMValueRef n) {
  loop_begin(c, &it->R, n);
  chans_begin(c, &it->q, k);
  LLVMValueRef base = imul(c, iadd(c, imul(c, it->R.i, iconst(c, k->C)), it->q.ch), iconst(c, k->S));
  loop_begin(c, &it->L, iconst(c, k->S));
  it->idx = iadd(c, base, it->L.i);
}
static void iter_end(gr_cg *c, blk_iter *it) {
  loop_end(c, &it->L);
  loop_end(c, &it->q.L);
  loop_end(c, &it->R);
}

/* out[cc] = sum over channel c0 + cc of f(x[idx]), f = x - shift[cc] (squared if sq) (times dy[idx]
 * if dy); without x, of dy. Each sample's S terms are summed, then added to the channel's total. */
static void blk_sum(gr_cg *c, const chan_blk *k, LLVMValueRef n, LLVMValueRef x, LLVMValueRef dy, LLVMValueRef shift, bool sq,
                    LLVMValueRef out) {
  blk_chans z;
  chans_begin(c, &z, k);
  storef(c, fconst(c, 0), out, z.cc);
  loop_end(c, &z.L);
  blk_iter it;
  iter_begin(c, &it, k, n);
  LLVMValueRef t = loop_phi(c, &it.L, c->ft, fconst(c, 0));
  LLVMValueRef v = x ? loadf(c, x, it.idx) : NULL;
  if (shift) v = fsub(c, v, loadf(c, shift, it.q.cc));
  if (sq) v = fmul(c, v, v);
  if (dy) v = x ? fmul(c, v, loadf(c, dy, it.idx)) : loadf(c, dy, it.idx);
  loop_carry(&it.L, t, fadd(c, t, v));
  loop_end(c, &it.L);
  storef(c, fadd(c, loadf(c, out, it.q.cc), t), out, it.q.cc);
  loop_end(c, &it.q.L);
  loop_end(c, &it.R);
}

/* db[c] = sum over n, s of dy[n, c, s] */
static LLVMValueRef emit_bias_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef dy = a[0], out = a[1], n = a[2];
  LLVMValueRef *vals[3] = {&dy, &out, &n};
  cg_par P;
  chan_blk k;
  blk_begin(c, &P, &k, &nd->in[0]->shape, vals, 3, 1);
  LLVMValueRef sum = blk_arr(c, &k);
  blk_sum(c, &k, n, NULL, dy, NULL, false, sum);
  blk_chans q;
  chans_begin(c, &q, &k);
  storef(c, loadf(c, sum, q.cc), out, q.ch);
  loop_end(c, &q.L);
  par_end(c, &P);
  return NULL;
}

static LLVMValueRef rsqrt_eps(gr_cg *c, LLVMValueRef var, double eps) {
  LLVMValueRef v = fadd(c, var, fconst(c, eps));
  return fdiv(c, fconst(c, 1), intrinsic(c, "llvm.sqrt", &v, 1));
}

/* dgamma = sum(dy (x - mean)) / sqrt(var + eps), written as a division: LLVM would turn a product with
 * 1 / sqrt (rsqrt_eps) into it where that has one use, but not where the kernel uses it again, so a
 * fused kernel (fuse.c) and a lone one would round differently. */
static LLVMValueRef gamma_grad(gr_cg *c, LLVMValueRef sum, LLVMValueRef var, double eps) {
  LLVMValueRef v = fadd(c, var, fconst(c, eps));
  return fdiv(c, sum, intrinsic(c, "llvm.sqrt", &v, 1));
}

/* The count of a channel's elements, n S, as a float. */
static LLVMValueRef chan_count(gr_cg *c, const chan_blk *k, LLVMValueRef n) {
  return LLVMBuildSIToFP(c->b, imul(c, n, iconst(c, k->S)), c->ft, "");
}

/* mean[cc] and var[cc] (biased) of the block's channels: the batch's (two passes), or the running
 * ones (rm, rv; a mean of 0 without rm). */
static void blk_stats(gr_cg *c, const gr_node *nd, const chan_blk *k, LLVMValueRef x, LLVMValueRef rm, LLVMValueRef rv, LLVMValueRef n,
                      LLVMValueRef mean, LLVMValueRef var) {
  blk_chans q;
  if (!nd->a.training) {
    chans_begin(c, &q, k);
    storef(c, rm ? loadf(c, rm, q.ch) : fconst(c, 0), mean, q.cc);
    storef(c, loadf(c, rv, q.ch), var, q.cc);
    loop_end(c, &q.L);
    return;
  }
  LLVMValueRef M = chan_count(c, k, n);
  blk_sum(c, k, n, x, NULL, NULL, false, mean);
  chans_begin(c, &q, k);
  storef(c, fdiv(c, loadf(c, mean, q.cc), M), mean, q.cc);
  loop_end(c, &q.L);
  blk_sum(c, k, n, x, NULL, mean, true, var);
  chans_begin(c, &q, k);
  storef(c, fdiv(c, loadf(c, var, q.cc), M), var, q.cc);
  loop_end(c, &q.L);
}

/* y = x * a + b with a = gamma invstd, b = beta - mean a (PyTorch's CPU form); in training the
 * running statistics move: r = (1 - momentum) r + momentum * stat (the variance unbiased) */
static LLVMValueRef emit_batchnorm(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], gamma = a[1], beta = a[2], rm = a[3], rv = a[4], nbt = a[5], y = a[6], n = a[7];
  double mom = nd->a.bn_momentum;
  if (nd->a.training) storef(c, fadd(c, loadf(c, nbt, iconst(c, 0)), fconst(c, 1)), nbt, iconst(c, 0));
  LLVMValueRef *vals[7] = {&x, &gamma, &beta, &rm, &rv, &y, &n};
  cg_par P;
  chan_blk k;
  blk_begin(c, &P, &k, &nd->in[0]->shape, vals, 7, 3);
  LLVMValueRef mean = blk_arr(c, &k), var = blk_arr(c, &k), alpha = blk_arr(c, &k), shift = blk_arr(c, &k);
  blk_stats(c, nd, &k, x, rm, rv, n, mean, var);
  blk_chans q;
  chans_begin(c, &q, &k);
  LLVMValueRef m = loadf(c, mean, q.cc), v = loadf(c, var, q.cc);
  if (nd->a.training) {
    LLVMValueRef M = chan_count(c, &k, n);
    LLVMValueRef big = LLVMBuildFCmp(c->b, LLVMRealOGT, M, fconst(c, 1), "");
    LLVMValueRef unbiased = LLVMBuildSelect(c->b, big, fdiv(c, fmul(c, v, M), fsub(c, M, fconst(c, 1))), v, "");
    storef(c, fadd(c, fmul(c, fconst(c, 1 - mom), loadf(c, rm, q.ch)), fmul(c, fconst(c, mom), m)), rm, q.ch);
    storef(c, fadd(c, fmul(c, fconst(c, 1 - mom), loadf(c, rv, q.ch)), fmul(c, fconst(c, mom), unbiased)), rv, q.ch);
  }
  LLVMValueRef al = fmul(c, loadf(c, gamma, q.ch), rsqrt_eps(c, v, nd->a.bn_eps));
  storef(c, al, alpha, q.cc);
  storef(c, fsub(c, loadf(c, beta, q.ch), fmul(c, m, al)), shift, q.cc);
  loop_end(c, &q.L);
  blk_iter it;
  iter_begin(c, &it, &k, n);
  out_store(c, fadd(c, fmul(c, loadf(c, x, it.idx), loadf(c, alpha, it.q.cc)), loadf(c, shift, it.q.cc)), y, it.idx, it.q.ch);
  iter_end(c, &it);
  par_end(c, &P);
  return NULL;
}

/* training: dx = (dy - (x - mean) k - sum(dy)/M) invstd gamma, k = sum((x - mean) dy) invstd^2 / M
 * running:  dx = dy invstd gamma */
static LLVMValueRef emit_batchnorm_grad_input(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], gamma = a[1], rv = a[2], dy = a[3], dx = a[4], n = a[5];
  bool train = nd->a.training;
  LLVMValueRef *vals[6] = {&x, &gamma, &rv, &dy, &dx, &n};
  cg_par P;
  chan_blk k;
  blk_begin(c, &P, &k, &nd->in[0]->shape, vals, 6, 5);
  LLVMValueRef mean = blk_arr(c, &k), var = blk_arr(c, &k), sxdy = blk_arr(c, &k), sdy = blk_arr(c, &k);
  LLVMValueRef kk = blk_arr(c, &k), gmean = blk_arr(c, &k), scale = blk_arr(c, &k);
  blk_stats(c, nd, &k, x, NULL, rv, n, mean, var);
  LLVMValueRef dgamma = NULL, dbeta = NULL;
  if (train) {
    blk_sum(c, &k, n, x, dy, mean, false, sxdy);
    blk_sum(c, &k, n, NULL, dy, NULL, false, sdy);
    /* fused siblings: the weight's gradient (as batchnorm_grad_gamma computes it) and the bias's */
    dgamma = sib_out(c, GR_OP_BATCHNORM_GRAD_GAMMA), dbeta = sib_out(c, GR_OP_BIAS_GRAD);
  }
  blk_chans q;
  chans_begin(c, &q, &k);
  LLVMValueRef v = loadf(c, var, q.cc), invstd = rsqrt_eps(c, v, nd->a.bn_eps);
  if (train) {
    LLVMValueRef M = chan_count(c, &k, n), sxy = loadf(c, sxdy, q.cc), sd = loadf(c, sdy, q.cc);
    storef(c, fdiv(c, fmul(c, sxy, fmul(c, invstd, invstd)), M), kk, q.cc);
    storef(c, fdiv(c, sd, M), gmean, q.cc);
    if (dgamma) storef(c, gamma_grad(c, sxy, v, nd->a.bn_eps), dgamma, q.ch);
    if (dbeta) storef(c, sd, dbeta, q.ch);
  }
  storef(c, fmul(c, invstd, loadf(c, gamma, q.ch)), scale, q.cc);
  loop_end(c, &q.L);
  blk_iter it;
  iter_begin(c, &it, &k, n);
  LLVMValueRef d = loadf(c, dy, it.idx), cc = it.q.cc;
  if (train) d = fsub(c, fsub(c, d, fmul(c, fsub(c, loadf(c, x, it.idx), loadf(c, mean, cc)), loadf(c, kk, cc))), loadf(c, gmean, cc));
  storef(c, fmul(c, d, loadf(c, scale, cc)), dx, it.idx);
  iter_end(c, &it);
  par_end(c, &P);
  return NULL;
}

/* dgamma = sum dy (x - mean) invstd */
static LLVMValueRef emit_batchnorm_grad_gamma(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], dy = a[1], rm = a[2], rv = a[3], dg = a[4], n = a[5];
  LLVMValueRef *vals[6] = {&x, &dy, &rm, &rv, &dg, &n};
  cg_par P;
  chan_blk k;
  blk_begin(c, &P, &k, &nd->in[0]->shape, vals, 6, 3);
  LLVMValueRef mean = blk_arr(c, &k), var = blk_arr(c, &k), sum = blk_arr(c, &k);
  blk_stats(c, nd, &k, x, rm, rv, n, mean, var);
  blk_sum(c, &k, n, x, dy, mean, false, sum);
  blk_chans q;
  chans_begin(c, &q, &k);
  storef(c, gamma_grad(c, loadf(c, sum, q.cc), loadf(c, var, q.cc), nd->a.bn_eps), dg, q.ch);
  loop_end(c, &q.L);
  par_end(c, &P);
  return NULL;
}

/* Rows and row lengths around an axis of a batched shape: outer = N * dims before axis,
 * inner(x) = dim[axis] * dims after axis. */
static LLVMValueRef outer_rows(gr_cg *c, const gr_shape *s, int axis, LLVMValueRef n) {
  int64_t k = 1;
  for (int i = 1; i < axis; i++) k *= s->dim[i];
  return imul(c, n, iconst(c, k));
}
static int64_t inner_len(const gr_shape *s, int axis) {
  int64_t k = 1;
  for (int i = axis; i < s->rank; i++) k *= s->dim[i];
  return k;
}

/* copies `len` floats */
static void copy_run(gr_cg *c, LLVMValueRef dst, LLVMValueRef src, int64_t len) {
  cg_loop L;
  loop_begin(c, &L, iconst(c, len));
  storef(c, loadf(c, src, L.i), dst, L.i);
  loop_end(c, &L);
}

/* y[r] = a[r] ++ b[r] for every outer row r */
static LLVMValueRef emit_concat(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  const gr_shape *as = &nd->in[0]->shape, *bs = &nd->in[1]->shape;
  int ax = nd->a.axis;
  int64_t ia = inner_len(as, ax), ib = inner_len(bs, ax);
  cg_loop R;
  loop_begin(c, &R, outer_rows(c, as, ax, a[3]));
  LLVMValueRef yrow = fptr(c, a[2], imul(c, R.i, iconst(c, ia + ib)));
  copy_run(c, yrow, fptr(c, a[0], imul(c, R.i, iconst(c, ia))), ia);
  copy_run(c, fptr(c, yrow, iconst(c, ia)), fptr(c, a[1], imul(c, R.i, iconst(c, ib))), ib);
  loop_end(c, &R);
  return NULL;
}

/* y[r] = x[r][start*after .. (start+len)*after) for every outer row r */
static LLVMValueRef emit_slice(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  const gr_shape *xs = &nd->in[0]->shape;
  int ax = nd->a.axis;
  int64_t ix = inner_len(xs, ax), after = ix / xs->dim[ax], iy = nd->a.len * after;
  cg_loop R;
  loop_begin(c, &R, outer_rows(c, xs, ax, a[2]));
  copy_run(c, fptr(c, a[1], imul(c, R.i, iconst(c, iy))), fptr(c, a[0], iadd(c, imul(c, R.i, iconst(c, ix)), iconst(c, nd->a.start * after))), iy);
  loop_end(c, &R);
  return NULL;
}

/* if (cond) { ... } — leaves the builder in the "then" block; cg_if_end joins. */
static LLVMBasicBlockRef cg_if_begin(gr_cg *c, LLVMValueRef cond) {
  LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(c->b));
  LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(c->ctx, fn, "then"), join = LLVMAppendBasicBlockInContext(c->ctx, fn, "join");
  LLVMBuildCondBr(c->b, cond, then, join);
  LLVMPositionBuilderAtEnd(c->b, then);
  return join;
}
static void cg_if_end(gr_cg *c, LLVMBasicBlockRef join) {
  LLVMBuildBr(c->b, join);
  LLVMPositionBuilderAtEnd(c->b, join);
}

/* 0 <= v < limit, for i64 v */
static LLVMValueRef in_range(gr_cg *c, LLVMValueRef v, int64_t limit) {
  return LLVMBuildICmp(c->b, LLVMIntULT, v, iconst(c, limit), "");
}

/* C = op(A) op(B) + beta C, row-major; dims and leading dimensions are i32 values. f32 calls
 * gr_sgemm (runtime/gemm.c: graft's AVX-512 kernel on its thread pool, or OpenBLAS), f64 cblas_dgemm. */
static void call_gemm(gr_cg *c, bool ta, bool tb, LLVMValueRef M, LLVMValueRef N, LLVMValueRef K, LLVMValueRef A, LLVMValueRef lda,
                      LLVMValueRef B, LLVMValueRef ldb, LLVMValueRef beta, LLVMValueRef C, LLVMValueRef ldc) {
  bool f64 = c->ft != c->f32;
  LLVMValueRef ta_v = LLVMConstInt(c->i32, f64 ? (ta ? CblasTrans : CblasNoTrans) : ta, 0);
  LLVMValueRef tb_v = LLVMConstInt(c->i32, f64 ? (tb ? CblasTrans : CblasNoTrans) : tb, 0);
  LLVMTypeRef pt[14] = {c->i32, c->i32, c->i32, c->i32, c->i32, c->i32, c->ft, c->ptr, c->i32, c->ptr, c->i32, c->ft, c->ptr, c->i32};
  LLVMValueRef args[14] = {LLVMConstInt(c->i32, CblasRowMajor, 0), ta_v, tb_v, M, N, K, fconst(c, 1.0), A, lda, B, ldb, beta, C, ldc};
  int skip = f64 ? 0 : 1; /* gr_sgemm has neither the order nor alpha */
  LLVMTypeRef st[12] = {c->i32, c->i32, c->i32, c->i32, c->i32, c->ptr, c->i32, c->ptr, c->i32, c->ft, c->ptr, c->i32};
  LLVMValueRef sargs[12] = {ta_v, tb_v, M, N, K, A, lda, B, ldb, beta, C, ldc};
  LLVMTypeRef fty = skip ? LLVMFunctionType(c->voidt, st, 12, 0) : LLVMFunctionType(c->voidt, pt, 14, 0);
  const char *name = f64 ? "cblas_dgemm" : "gr_sgemm";
  LLVMValueRef fn = LLVMGetNamedFunction(c->mod, name);
  if (!fn) fn = LLVMAddFunction(c->mod, name, fty);
  LLVMBuildCall2(c->b, fty, fn, skip ? sargs : args, skip ? 12 : 14, "");
}

static LLVMValueRef i32c(gr_cg *c, int64_t v) { return LLVMConstInt(c->i32, (unsigned long long)v, 0); }


static LLVMValueRef imax(gr_cg *c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, a, b, ""), a, b, "");
}
static LLVMValueRef imin(gr_cg *c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, a, b, ""), a, b, "");
}

/* The lanes of positions p in [lo, lo + count) among L lanes, sw to a position (sw 2: only the even
 * lanes hold positions, p = lane / 2), as one unsigned compare of i32 lanes: (p - lo) < count. Built
 * that way, and not as the AND of several i1 vectors, a mask stays in vector registers on AVX2 (which
 * has no mask registers) instead of being packed to bytes and widened again for every load. count <=
 * 0: no lane. */
static LLVMValueRef lane_range(gr_cg *c, int L, int sw, LLVMValueRef lo, LLVMValueRef count) {
  LLVMValueRef pos[32];
  for (int t = 0; t < L; t++) pos[t] = LLVMConstInt(c->i32, t % sw ? 1u << 20 : (unsigned)(t / sw), 0);
  LLVMValueRef rel = LLVMBuildSub(c->b, LLVMConstVector(pos, (unsigned)L), splat(c, LLVMBuildTrunc(c->b, lo, c->i32, ""), L), "");
  return LLVMBuildICmp(c->b, LLVMIntULT, rel, splat(c, LLVMBuildTrunc(c->b, imax(c, count, iconst(c, 0)), c->i32, ""), L), "");
}

/* im2col of channel ch (and, with ki, only that kernel row) of one sample x [Cin, H, W] into its
 * columns of cols [Cin*kh*kw, ld] (row stride ld; zeros where the window hangs over the padding); or,
 * with back, col2im: x[ch, ih, iw] += cols[...] (x zeroed first by the caller). Each output row
 * splits into the columns whose input lies inside x ([lo, hi), a plain strided copy that vectorises)
 * and those over the padding (zeros; skipped by col2im); a row whose input row is padding is zeros. */
static void im2col_rows(gr_cg *c, const gr_conv_geom *g, LLVMValueRef x, LLVMValueRef cols, LLVMValueRef ld, bool back,
                        LLVMValueRef ch, LLVMValueRef ki) {
  cg_loop KI, KJ, OH, OW;
  if (!ki) loop_begin(c, &KI, iconst(c, g->kh));
  LLVMValueRef kr = ki ? ki : KI.i;
  loop_begin(c, &KJ, iconst(c, g->kw));
  LLVMValueRef row = iadd(c, imul(c, iadd(c, imul(c, ch, iconst(c, g->kh)), kr), iconst(c, g->kw)), KJ.i);
  LLVMValueRef xc = imul(c, ch, iconst(c, g->h * g->w)), rbase = imul(c, row, ld);
  /* iw = ow sw + off, off = kj dw - pw: inside x for lo <= ow < hi */
  LLVMValueRef off = iadd(c, imul(c, KJ.i, iconst(c, g->dw)), iconst(c, -g->pw));
  LLVMValueRef neg = LLVMBuildNSWSub(c->b, iconst(c, 0), off, "");
  LLVMValueRef lo = imax(c, iconst(c, 0), LLVMBuildSDiv(c->b, iadd(c, neg, iconst(c, g->sw - 1)), iconst(c, g->sw), ""));
  LLVMValueRef last = LLVMBuildNSWSub(c->b, iconst(c, g->w - 1), off, ""); /* ow sw <= last */
  LLVMValueRef hi = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, last, iconst(c, 0), ""), iconst(c, 0),
                                    iadd(c, LLVMBuildSDiv(c->b, last, iconst(c, g->sw), ""), iconst(c, 1)), "");
  hi = imin(c, hi, iconst(c, g->wo));
  lo = imin(c, lo, hi);
  loop_begin(c, &OH, iconst(c, g->ho));
  LLVMValueRef ih = iadd(c, imul(c, OH.i, iconst(c, g->sh)), iconst(c, -g->ph));
  ih = iadd(c, ih, imul(c, kr, iconst(c, g->dh)));
  LLVMValueRef ih_ok = in_range(c, ih, g->h), xrow = iadd(c, xc, imul(c, ih, iconst(c, g->w)));
  LLVMValueRef obase = iadd(c, rbase, imul(c, OH.i, iconst(c, g->wo)));
  LLVMValueRef rlo = LLVMBuildSelect(c->b, ih_ok, lo, iconst(c, g->wo), ""), rhi = LLVMBuildSelect(c->b, ih_ok, hi, iconst(c, g->wo), "");
  /* indices, not pointers, from x and cols: a pointer into a padding row would be out of bounds */
  LLVMValueRef xoff = iadd(c, xrow, off);
  if (!back) {
    loop_begin(c, &OW, rlo);
    storef(c, fconst(c, 0), cols, iadd(c, obase, OW.i));
    loop_end(c, &OW);
    loop_begin(c, &OW, LLVMBuildNSWSub(c->b, rhi, rlo, ""));
    LLVMValueRef ow = iadd(c, rlo, OW.i);
    storef(c, loadf(c, x, iadd(c, xoff, imul(c, ow, iconst(c, g->sw)))), cols, iadd(c, obase, ow));
    loop_end(c, &OW);
    loop_begin(c, &OW, LLVMBuildNSWSub(c->b, iconst(c, g->wo), rhi, ""));
    storef(c, fconst(c, 0), cols, iadd(c, iadd(c, obase, rhi), OW.i));
    loop_end(c, &OW);
  } else if (g->sw == 1 && g->w >= 4) {
    /* x's row in blocks of 8 lanes (4 in rows under 8 wide; a scalar tail past the last whole
     * block): each block is loaded and stored whole, plus the columns of cols that fall on it (a
     * masked load; lanes off it add a zero, which changes nothing: the sums x holds start at +0 and
     * are never -0). Every element receives the same shares in the same order as the scalar loop,
     * which LLVM left scalar on rows shorter than its vector loop; blocks of x's own row keep the
     * stores unmasked (a masked store is microcoded on AMD's cores) and inside the channel's plane,
     * which one thread owns. */
    int B = g->w >= 8 ? 8 : 4;
    LLVMTypeRef vb = LLVMVectorType(c->ft, (unsigned)B);
    LLVMValueRef align = LLVMConstInt(c->i32, elem_align(c), 0), n = LLVMBuildNSWSub(c->b, rhi, rlo, "");
    LLVMValueRef src = LLVMBuildNSWSub(c->b, obase, off, ""); /* cols index of x's column 0 */
    loop_begin(c, &OW, LLVMBuildSelect(c->b, ih_ok, iconst(c, g->w / B), iconst(c, 0), ""));
    LLVMValueRef iw = imul(c, OW.i, iconst(c, B));
    /* lane l is output ow = iw + l - off, a column of this row for rlo <= ow < rhi */
    LLVMValueRef largs[4] = {raw_fptr(c, cols, iadd(c, src, iw)), align,
                             lane_range(c, B, 1, LLVMBuildNSWSub(c->b, iadd(c, rlo, off), iw, ""), n), LLVMConstNull(vb)};
    LLVMValueRef p = raw_fptr(c, x, iadd(c, xrow, iw)), old = LLVMBuildLoad2(c->b, vb, p, "");
    LLVMSetAlignment(old, elem_align(c));
    LLVMSetAlignment(LLVMBuildStore(c->b, fadd(c, old, masked_op(c, "llvm.masked.load", vb, largs, 4)), p), elem_align(c));
    loop_end(c, &OW);
    LLVMValueRef tail = imax(c, iconst(c, g->w / B * B), iadd(c, rlo, off)); /* the scalar loop's, from there */
    loop_begin(c, &OW, imax(c, LLVMBuildNSWSub(c->b, iadd(c, rhi, off), tail, ""), iconst(c, 0)));
    LLVMValueRef xi = iadd(c, xrow, iadd(c, tail, OW.i));
    storef(c, fadd(c, loadf(c, x, xi), loadf(c, cols, iadd(c, src, iadd(c, tail, OW.i)))), x, xi);
    loop_end(c, &OW);
  } else {
    loop_begin(c, &OW, LLVMBuildNSWSub(c->b, rhi, rlo, ""));
    LLVMValueRef ow = iadd(c, rlo, OW.i), xi = iadd(c, xoff, imul(c, ow, iconst(c, g->sw)));
    storef(c, fadd(c, loadf(c, x, xi), loadf(c, cols, iadd(c, obase, ow))), x, xi);
    loop_end(c, &OW);
  }
  loop_end(c, &OH);
  loop_end(c, &KJ);
  if (!ki) loop_end(c, &KI);
}

/* ---- packing B for the GEMM ------------------------------------------------------------------- */

/* A function the GEMM calls to pack blocks of its B operand (runtime/gemm.c, gr_pack_fn):
 *   void <kernel>.pack(ptr ctx, i64 k0, i64 kc, i64 n0, i64 nc, ptr bp)
 * writes op(B)[k0 .. k0+kc, n0 .. n0+nc] as GR_PANEL-column micro-panels, element (k, j) at
 * bp[(j - n0) / 32 * 32 kc + (k - k0) 32 + j % 32], zeros past the product's last column. So a
 * convolution's B is packed straight from its NCHW tensor, as the GEMM needs each block, while the
 * block stays in the cache: no columns matrix is written and read back. Like a parallel body, the
 * function may use only the values pack_begin was given (passed in ctx: slots_store, slot_load). */
typedef struct cg_pack {
  LLVMBasicBlockRef resume;
  LLVMValueRef fn, outer[4], *vals[4], k0, kc, n0, nc, bp;
  int nv;
} cg_pack;
static void pack_begin(gr_cg *c, cg_pack *P, LLVMValueRef **vals, int nv) {
  GR_ASSERT(nv <= 4);
  memset(P, 0, sizeof *P);
  P->resume = LLVMGetInsertBlock(c->b);
  P->nv = nv;
  LLVMTypeRef pt[6] = {c->ptr, c->i64, c->i64, c->i64, c->i64, c->ptr};
  P->fn = named_fn(c, "pack", LLVMFunctionType(c->voidt, pt, 6, 0));
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, P->fn, "entry"));
  LLVMValueRef ctx = LLVMGetParam(P->fn, 0);
  for (int k = 0; k < nv; k++) {
    P->vals[k] = vals[k];
    P->outer[k] = *vals[k];
    *vals[k] = slot_load(c, ctx, k, LLVMTypeOf(P->outer[k]));
  }
  P->k0 = LLVMGetParam(P->fn, 1), P->kc = LLVMGetParam(P->fn, 2), P->n0 = LLVMGetParam(P->fn, 3), P->nc = LLVMGetParam(P->fn, 4);
  P->bp = LLVMGetParam(P->fn, 5);
}
/* Back in the kernel: returns ctx, the slots holding the values, and the function in *fn. */
static LLVMValueRef pack_end(gr_cg *c, cg_pack *P, LLVMValueRef *fn) {
  *fn = P->fn;
  LLVMBuildRetVoid(c->b);
  LLVMPositionBuilderAtEnd(c->b, P->resume);
  for (int k = 0; k < P->nv; k++) *P->vals[k] = P->outer[k];
  return slots_store(c, P->outer, P->nv);
}

/* The pack function's walk over its micro-panels: panel q holds columns [j0, j1) of a product of N
 * columns (j1 - j0 < 32 in a last panel, whose other columns must be zeros) at bp + q 32 kc. Leaves
 * the builder in the panel loop (w->Q). */
typedef struct pack_walk {
  cg_loop Q;
  LLVMValueRef j0, j1, base;
} pack_walk;
static void pack_panels_begin(gr_cg *c, cg_pack *P, pack_walk *w, LLVMValueRef N) {
  loop_begin(c, &w->Q, LLVMBuildLShr(c->b, iadd(c, P->nc, iconst(c, GR_PANEL - 1)), iconst(c, 5), ""));
  w->j0 = iadd(c, P->n0, imul(c, w->Q.i, iconst(c, GR_PANEL)));
  w->j1 = imin(c, iadd(c, w->j0, iconst(c, GR_PANEL)), N);
  w->base = imul(c, imul(c, w->Q.i, iconst(c, GR_PANEL)), P->kc);
}
/* A prefetch of base[idx] into every cache level, for reading (the pack functions read a panel's rows
 * where the next panel will read them again, further along). */
static void prefetch(gr_cg *c, LLVMValueRef base, LLVMValueRef idx) {
  unsigned id = LLVMLookupIntrinsicID("llvm.prefetch", 13);
  LLVMTypeRef ov[1] = {c->ptr};
  LLVMValueRef args[4] = {raw_fptr(c, base, idx), LLVMConstInt(c->i32, 0, 0), LLVMConstInt(c->i32, 3, 0), LLVMConstInt(c->i32, 1, 0)};
  LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->ctx, id, ov, 1), LLVMGetIntrinsicDeclaration(c->mod, id, ov, 1), args, 4, "");
}

/* Lane vectors for the pack functions: 16 lanes of i32 (positions; in the gather paths, indices of a
 * chunk's elements, which stay below 2^31: checked there). */
static LLVMValueRef lane_iota(gr_cg *c, int64_t first) {
  LLVMValueRef v[16];
  for (int i = 0; i < 16; i++) v[i] = LLVMConstInt(c->i32, (unsigned long long)(first + i), 0);
  return LLVMConstVector(v, 16);
}
static LLVMValueRef lanes32(gr_cg *c, LLVMValueRef v64, int lanes) { return splat(c, LLVMBuildTrunc(c->b, v64, c->i32, ""), lanes); }
static LLVMValueRef vsplat32(gr_cg *c, LLVMValueRef v64) { return lanes32(c, v64, 16); }

/* Half panels cut into runs: the 16 positions from jh on are pieces of runs of `len` consecutive
 * positions (an output row, or a sample's plane), at most half_pieces(len) of them. Piece q is part of
 * run r = jh / len + q, whose first position is at `first` (relative to jh, maybe negative): the
 * piece's positions are [*lo, *hi) (relative to jh; before `on`, past which the columns are past the
 * product; empty when *hi <= *lo). */
static int half_pieces(int64_t len) { return len % 16 == 0 ? 1 : (int)(15 / len + 2); }
static void half_piece(gr_cg *c, LLVMValueRef jh, LLVMValueRef on, int64_t len, int q, LLVMValueRef *r, LLVMValueRef *first, LLVMValueRef *lo,
                       LLVMValueRef *hi) {
  *r = iadd(c, LLVMBuildSDiv(c->b, jh, iconst(c, len), ""), iconst(c, q));
  *first = LLVMBuildNSWSub(c->b, imul(c, *r, iconst(c, len)), jh, "");
  *lo = imax(c, *first, iconst(c, 0));
  *hi = imin(c, iadd(c, *first, iconst(c, len)), on);
}

/* Row k of a convolution's im2col: its input channel ci, its kernel element r = ki kw + kj (if r is
 * not NULL) and that element's offsets ki dh, kj dw. */
static void kernel_row(gr_cg *c, const gr_conv_geom *g, LLVMValueRef k, LLVMValueRef *ci, LLVMValueRef *r, LLVMValueRef *dh, LLVMValueRef *dw) {
  LLVMValueRef kk = iconst(c, g->kh * g->kw), kr = LLVMBuildSRem(c->b, k, kk, "");
  *ci = LLVMBuildSDiv(c->b, k, kk, "");
  if (r) *r = kr;
  *dh = imul(c, LLVMBuildSDiv(c->b, kr, iconst(c, g->kw), ""), iconst(c, g->dh));
  *dw = imul(c, LLVMBuildSRem(c->b, kr, iconst(c, g->kw), ""), iconst(c, g->dw));
}
/* 16 elements of src at the lanes' indices idx, zeros in the lanes off in mask; stored whole at dst[d]. */
static void gather16(gr_cg *c, LLVMValueRef src, LLVMValueRef idx, LLVMValueRef mask, LLVMValueRef dst, LLVMValueRef d) {
  LLVMTypeRef vt = LLVMVectorType(c->ft, 16), pv = LLVMVectorType(c->ptr, 16);
  LLVMValueRef ptrs = LLVMBuildGEP2(c->b, c->ft, src, &idx, 1, ""); /* no inbounds: off lanes may point anywhere */
  unsigned id = LLVMLookupIntrinsicID("llvm.masked.gather", 18);
  LLVMTypeRef ov[2] = {vt, pv};
  LLVMValueRef args[4] = {ptrs, LLVMConstInt(c->i32, elem_align(c), 0), mask, LLVMConstNull(vt)};
  LLVMValueRef v = LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->ctx, id, ov, 2), LLVMGetIntrinsicDeclaration(c->mod, id, ov, 2), args, 4, "");
  LLVMSetAlignment(LLVMBuildStore(c->b, v, fptr(c, dst, d)), elem_align(c));
}

/* Where a piece of a half panel (output row starting at ihb, iwb; positions [seg_lo, seg_hi); sample
 * at xs) reads row k's elements in channel 0 (*at), and which of its sw-spaced lanes (*m), for the
 * kernel element at offsets dh, dw. Position t: x[xs + ci HW + ih W + iw0 + sw t], inside the row for
 * 0 <= iw0 + sw t < W, that is ceil(-iw0 / sw) <= t < ceil((W - iw0) / sw); the piece's positions
 * there, none when row ih is padding. */
static void piece_at(gr_cg *c, const gr_conv_geom *g, int sw, LLVMValueRef ihb, LLVMValueRef iwb, LLVMValueRef xs, LLVMValueRef seg_lo,
                     LLVMValueRef seg_hi, LLVMValueRef dh, LLVMValueRef dw, LLVMValueRef *at, LLVMValueRef *m) {
  LLVMValueRef ih = iadd(c, ihb, dh), iw0 = iadd(c, iwb, dw);
  LLVMValueRef t_lo = LLVMBuildNSWSub(c->b, iconst(c, 0), iw0, ""), t_hi = LLVMBuildNSWSub(c->b, iconst(c, g->w), iw0, "");
  if (sw == 2) {
    t_lo = LLVMBuildAShr(c->b, iadd(c, t_lo, iconst(c, 1)), iconst(c, 1), "");
    t_hi = LLVMBuildAShr(c->b, iadd(c, t_hi, iconst(c, 1)), iconst(c, 1), "");
  }
  LLVMValueRef lo = imax(c, seg_lo, t_lo), hi = imin(c, seg_hi, t_hi);
  LLVMValueRef count = LLVMBuildSelect(c->b, in_range(c, ih, g->h), LLVMBuildNSWSub(c->b, hi, lo, ""), iconst(c, 0), "");
  *m = lane_range(c, 16 * sw, sw, lo, count);
  *at = iadd(c, xs, iadd(c, imul(c, ih, iconst(c, g->w)), iw0));
}

/* The pack function of a convolution's forward GEMM: B = im2col(x) [Cin/G kh kw, nc HoWo] of one
 * group (x: the chunk's first sample, at the group's first channel). A panel's 32 columns are 32
 * output positions (sample, oh, ow), worked out once per panel as lane vectors; each row k =
 * (channel, ki, kj) of the block is then two masked gathers of x, the lanes whose window element
 * falls on the padding (or past the last column) zeros. */
static LLVMValueRef im2col_pack(gr_cg *c, const gr_conv_geom *g, LLVMValueRef x, LLVMValueRef nc, LLVMValueRef *fn) {
  LLVMValueRef *vals[2] = {&x, &nc};
  cg_pack P;
  pack_begin(c, &P, vals, 2);
  pack_walk w;
  pack_panels_begin(c, &P, &w, imul(c, nc, iconst(c, g->ho * g->wo)));
  cg_loop K;
  /* Rows that are contiguous runs of x (stride 1 or 2): the 16 positions of a half panel are pieces
   * of at most S output rows, and each piece's row k is one masked load of x (with stride 2, of 32
   * floats whose even lanes are wanted), the pieces merged lane by lane. */
  int S = half_pieces(g->wo);
  if (g->sw <= 2 && S <= 4) {
    int sw = (int)g->sw, L = 16 * sw;
    int64_t R = g->kh * g->kw;
    LLVMTypeRef vt = LLVMVectorType(c->ft, (unsigned)L), mt = LLVMVectorType(c->i32, (unsigned)L);
    LLVMValueRef seg_lo[2][4], seg_hi[2][4], xs[2][4], ihb[2][4], iwb[2][4];
    for (int h = 0; h < 2; h++) {
      LLVMValueRef jh = iadd(c, w.j0, iconst(c, 16 * h)), on = LLVMBuildNSWSub(c->b, w.j1, jh, "");
      for (int q = 0; q < S; q++) {
        LLVMValueRef r, first;
        half_piece(c, jh, on, g->wo, q, &r, &first, &seg_lo[h][q], &seg_hi[h][q]);
        LLVMValueRef n = LLVMBuildSDiv(c->b, r, iconst(c, g->ho), ""), oh = LLVMBuildSRem(c->b, r, iconst(c, g->ho), "");
        xs[h][q] = imul(c, n, iconst(c, g->cin * g->h * g->w));
        ihb[h][q] = iadd(c, imul(c, oh, iconst(c, g->sh)), iconst(c, -g->ph));
        iwb[h][q] = iadd(c, imul(c, LLVMBuildNSWSub(c->b, iconst(c, 0), first, ""), iconst(c, sw)), iconst(c, -g->pw)); /* iw of position 0 */
      }
    }
    /* With two or more channels per group, each kernel element's pieces (their lanes, as sign masks,
     * and where they start) are worked out once per panel into a table (at most 512 entries, 64 KiB
     * of stack), and row k = (ci, r) looks them up: the rows of every channel share them (ResNet's
     * stem, 3 channels and 49 kernel elements, packs in a quarter less time). Otherwise each row
     * works out its own. */
    bool table = g->cin / g->groups >= 2 && R * 2 * S <= 512;
    LLVMValueRef tm = NULL, ta = NULL;
    if (table) {
      tm = entry_alloca(c, LLVMArrayType(mt, (unsigned)(R * 2 * S)));
      ta = entry_alloca(c, LLVMArrayType(c->i64, (unsigned)(R * 2 * S)));
      cg_loop E;
      loop_begin(c, &E, iconst(c, R));
      LLVMValueRef ci0, dh, dw;
      kernel_row(c, g, E.i, &ci0, NULL, &dh, &dw); /* element E.i of channel 0 */
      for (int h = 0; h < 2; h++)
        for (int q = 0; q < S; q++) {
          LLVMValueRef at, m, e = iadd(c, imul(c, E.i, iconst(c, 2 * S)), iconst(c, h * S + q));
          piece_at(c, g, sw, ihb[h][q], iwb[h][q], xs[h][q], seg_lo[h][q], seg_hi[h][q], dh, dw, &at, &m);
          LLVMBuildStore(c->b, LLVMBuildSExt(c->b, m, mt, ""), elem_ptr(c, mt, tm, e));
          LLVMBuildStore(c->b, at, elem_ptr(c, c->i64, ta, e));
        }
      loop_end(c, &E);
    }
    loop_begin(c, &K, P.kc);
    LLVMValueRef ci, dh, dw, r;
    kernel_row(c, g, iadd(c, P.k0, K.i), &ci, &r, &dh, &dw);
    LLVMValueRef cplane = imul(c, ci, iconst(c, g->h * g->w));
    for (int h = 0; h < 2; h++) {
      LLVMValueRef v = LLVMConstNull(vt);
      for (int q = 0; q < S; q++) {
        LLVMValueRef at, m;
        if (table) {
          LLVMValueRef e = iadd(c, imul(c, r, iconst(c, 2 * S)), iconst(c, h * S + q));
          m = LLVMBuildICmp(c->b, LLVMIntSLT, LLVMBuildLoad2(c->b, mt, elem_ptr(c, mt, tm, e), ""), LLVMConstNull(mt), "");
          at = LLVMBuildLoad2(c->b, c->i64, elem_ptr(c, c->i64, ta, e), "");
        } else {
          piece_at(c, g, sw, ihb[h][q], iwb[h][q], xs[h][q], seg_lo[h][q], seg_hi[h][q], dh, dw, &at, &m);
        }
        at = iadd(c, at, cplane);
        LLVMValueRef args[4] = {raw_fptr(c, x, at), LLVMConstInt(c->i32, elem_align(c), 0), m, v};
        if (q == 0) {
          v = masked_op(c, "llvm.masked.load", vt, args, 4);
          prefetch(c, x, iadd(c, at, iconst(c, GR_PANEL * sw))); /* the next panel: panels walk along the rows */
          continue;
        }
        /* a later piece only where the half panel reaches it (most half panels lie in one or two
         * rows): a branch that goes the same way for every row of the panel */
        LLVMBasicBlockRef from = LLVMGetInsertBlock(c->b), join = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntSLT, seg_lo[h][q], seg_hi[h][q], ""));
        LLVMValueRef loaded = masked_op(c, "llvm.masked.load", vt, args, 4);
        LLVMBasicBlockRef then = LLVMGetInsertBlock(c->b);
        cg_if_end(c, join);
        LLVMValueRef phi = LLVMBuildPhi(c->b, vt, ""), in[2] = {loaded, v};
        LLVMBasicBlockRef bb[2] = {then, from};
        LLVMAddIncoming(phi, in, bb, 2);
        v = phi;
      }
      if (sw == 2) {
        int even[16];
        for (int i = 0; i < 16; i++) even[i] = 2 * i;
        v = shuffle(c, v, LLVMGetUndef(vt), 16, even);
      }
      vstore(c, v, P.bp, iadd(c, w.base, iadd(c, imul(c, K.i, iconst(c, GR_PANEL)), iconst(c, 16 * h))), 16, 16);
    }
    loop_end(c, &K);
    loop_end(c, &w.Q);
    return pack_end(c, &P, fn);
  }
  /* otherwise each row k of a half panel is a masked gather of its 16 positions' elements (i32 lanes) */
  GR_CHECK(gr_conv_chunk(g) * g->cin * g->h * g->w < INT32_MAX, "a convolution chunk of more than 2^31 elements");
  LLVMValueRef ihb[2], iwb[2], base[2], ok[2];
  for (int h = 0; h < 2; h++) {
    LLVMValueRef j = LLVMBuildAdd(c->b, vsplat32(c, w.j0), lane_iota(c, 16 * h), "");
    ok[h] = LLVMBuildICmp(c->b, LLVMIntSLT, j, vsplat32(c, w.j1), "");
    LLVMValueRef n = LLVMBuildUDiv(c->b, j, isplat(c, g->ho * g->wo), ""), sp = LLVMBuildURem(c->b, j, isplat(c, g->ho * g->wo), "");
    LLVMValueRef oh = LLVMBuildUDiv(c->b, sp, isplat(c, g->wo), ""), ow = LLVMBuildURem(c->b, sp, isplat(c, g->wo), "");
    ihb[h] = LLVMBuildSub(c->b, LLVMBuildMul(c->b, oh, isplat(c, g->sh), ""), isplat(c, g->ph), "");
    iwb[h] = LLVMBuildSub(c->b, LLVMBuildMul(c->b, ow, isplat(c, g->sw), ""), isplat(c, g->pw), "");
    base[h] = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, n, isplat(c, g->cin * g->h * g->w), ""),
                           LLVMBuildAdd(c->b, LLVMBuildMul(c->b, ihb[h], isplat(c, g->w), ""), iwb[h], ""), "");
  }
  loop_begin(c, &K, P.kc);
  LLVMValueRef ci, dh, dw;
  kernel_row(c, g, iadd(c, P.k0, K.i), &ci, NULL, &dh, &dw);
  LLVMValueRef koff = vsplat32(c, iadd(c, imul(c, ci, iconst(c, g->h * g->w)), iadd(c, imul(c, dh, iconst(c, g->w)), dw)));
  for (int h = 0; h < 2; h++) {
    LLVMValueRef ih = LLVMBuildAdd(c->b, ihb[h], vsplat32(c, dh), ""), iw = LLVMBuildAdd(c->b, iwb[h], vsplat32(c, dw), "");
    LLVMValueRef in = LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntULT, ih, isplat(c, g->h), ""), LLVMBuildICmp(c->b, LLVMIntULT, iw, isplat(c, g->w), ""), "");
    gather16(c, x, LLVMBuildAdd(c->b, base[h], koff, ""), LLVMBuildAnd(c->b, in, ok[h], ""), P.bp,
             iadd(c, w.base, iadd(c, imul(c, K.i, iconst(c, GR_PANEL)), iconst(c, 16 * h))));
  }
  loop_end(c, &K);
  loop_end(c, &w.Q); /* every lane written: no tail to zero */
  return pack_end(c, &P, fn);
}

/* The pack function of a convolution's input-gradient GEMM: B = dy as [Cout/G, nc HoWo] of one group
 * (dy: the chunk's first sample, at the group's first channel). A half panel's row k is pieced
 * together from masked loads of the planes it covers, or, for planes of a few positions, gathered as
 * im2col_pack does. */
static LLVMValueRef chw_pack(gr_cg *c, const gr_conv_geom *g, LLVMValueRef dy, LLVMValueRef nc, LLVMValueRef *fn) {
  int64_t HW = g->ho * g->wo;
  LLVMValueRef *vals[2] = {&dy, &nc};
  cg_pack P;
  pack_begin(c, &P, vals, 2);
  pack_walk w;
  pack_panels_begin(c, &P, &w, imul(c, nc, iconst(c, HW)));
  cg_loop K;
  /* the 16 positions of a half panel are pieces of at most S samples' planes, each piece's row k one
   * masked load (whole planes of 16: plain loads) */
  int S = half_pieces(HW);
  if (S <= 4) {
    LLVMValueRef seg[2][4], src[2][4];
    for (int h = 0; h < 2; h++) {
      LLVMValueRef jh = iadd(c, w.j0, iconst(c, 16 * h)), on = LLVMBuildNSWSub(c->b, w.j1, jh, "");
      for (int q = 0; q < S; q++) {
        LLVMValueRef n, first, lo, hi;
        half_piece(c, jh, on, HW, q, &n, &first, &lo, &hi);
        seg[h][q] = lane_range(c, 16, 1, lo, LLVMBuildNSWSub(c->b, hi, lo, ""));
        src[h][q] = LLVMBuildNSWSub(c->b, imul(c, n, iconst(c, g->cout * HW)), first, ""); /* dy index of position 0, channel 0 */
      }
    }
    loop_begin(c, &K, P.kc);
    LLVMValueRef koff = imul(c, iadd(c, P.k0, K.i), iconst(c, HW));
    LLVMTypeRef vt = LLVMVectorType(c->ft, 16);
    for (int h = 0; h < 2; h++) {
      LLVMValueRef v = LLVMConstNull(vt);
      for (int q = 0; q < S; q++) {
        LLVMValueRef args[4] = {raw_fptr(c, dy, iadd(c, src[h][q], koff)), LLVMConstInt(c->i32, elem_align(c), 0), seg[h][q], v};
        v = masked_op(c, "llvm.masked.load", vt, args, 4);
        if (q == 0) prefetch(c, dy, iadd(c, iadd(c, src[h][q], koff), iconst(c, GR_PANEL)));
      }
      vstore(c, v, P.bp, iadd(c, w.base, iadd(c, imul(c, K.i, iconst(c, GR_PANEL)), iconst(c, 16 * h))), 16, 16);
    }
    loop_end(c, &K);
    loop_end(c, &w.Q);
  } else { /* gathers, with i32 lanes */
    GR_CHECK(gr_conv_chunk(g) * g->cout * HW < INT32_MAX, "a convolution chunk of more than 2^31 elements");
    LLVMValueRef base[2], ok[2];
    for (int h = 0; h < 2; h++) {
      LLVMValueRef j = LLVMBuildAdd(c->b, vsplat32(c, w.j0), lane_iota(c, 16 * h), "");
      ok[h] = LLVMBuildICmp(c->b, LLVMIntSLT, j, vsplat32(c, w.j1), "");
      LLVMValueRef n = LLVMBuildUDiv(c->b, j, isplat(c, HW), ""), sp = LLVMBuildURem(c->b, j, isplat(c, HW), "");
      base[h] = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, n, isplat(c, g->cout * HW), ""), sp, "");
    }
    loop_begin(c, &K, P.kc);
    LLVMValueRef koff = vsplat32(c, imul(c, iadd(c, P.k0, K.i), iconst(c, HW)));
    for (int h = 0; h < 2; h++)
      gather16(c, dy, LLVMBuildAdd(c->b, base[h], koff, ""), ok[h], P.bp, iadd(c, w.base, iadd(c, imul(c, K.i, iconst(c, GR_PANEL)), iconst(c, 16 * h))));
    loop_end(c, &K);
    loop_end(c, &w.Q);
  }
  return pack_end(c, &P, fn);
}

/* C = op(A) B + beta C, B packed by a pack function (gr_sgemm_cb / gr_dgemm_cb, runtime/gemm.c). */
static void call_gemm_cb(gr_cg *c, bool ta, LLVMValueRef M, LLVMValueRef N, LLVMValueRef K, LLVMValueRef A, LLVMValueRef lda,
                         LLVMValueRef pack, LLVMValueRef ctx, LLVMValueRef beta, LLVMValueRef C, LLVMValueRef ldc) {
  LLVMTypeRef pt[11] = {c->i32, c->i32, c->i32, c->i32, c->ptr, c->i32, c->ptr, c->ptr, c->ft, c->ptr, c->i32};
  LLVMValueRef args[11] = {LLVMConstInt(c->i32, ta, 0), M, N, K, A, lda, pack, ctx, beta, C, ldc};
  LLVMTypeRef fty = LLVMFunctionType(c->voidt, pt, 11, 0);
  const char *name = c->ft != c->f32 ? "gr_dgemm_cb" : "gr_sgemm_cb";
  LLVMValueRef fn = LLVMGetNamedFunction(c->mod, name);
  if (!fn) fn = LLVMAddFunction(c->mod, name, fty);
  LLVMBuildCall2(c->b, fty, fn, args, 11, "");
}

/* Between NCHW y [nc, C, HW] and channel-major t [C, nc*HW]: t[c, n*HW + s] = y[n, c, s] (or back),
 * channels in parallel. With bn (gamma, beta, running_mean, running_var: a frozen batchnorm folded
 * into a convolution), on the way to NCHW y = t alpha + shift, alpha = gamma / sqrt(var + eps),
 * shift = beta - mean alpha: batchnorm's own arithmetic, applied while the output is copied anyway. */
static void nchw_transpose(gr_cg *c, LLVMValueRef y, LLVMValueRef t, int64_t C, int64_t HW, LLVMValueRef nc, bool to_nchw,
                           const LLVMValueRef *bn, double eps) {
  cg_loop R, L;
  LLVMValueRef alpha = NULL, shift = NULL, b0 = bn ? bn[0] : NULL, b1 = bn ? bn[1] : NULL, b2 = bn ? bn[2] : NULL, b3 = bn ? bn[3] : NULL;
  LLVMValueRef *vals[7] = {&y, &t, &nc, &b0, &b1, &b2, &b3};
  cg_par K;
  par_begin(c, &K, iconst(c, C), vals, bn ? 7 : 3, HW * 8, 0);
  LLVMValueRef ld = imul(c, nc, iconst(c, HW));
  if (bn) {
    alpha = fmul(c, loadf(c, b0, K.i), rsqrt_eps(c, loadf(c, b3, K.i), eps));
    shift = fsub(c, loadf(c, b1, K.i), fmul(c, loadf(c, b2, K.i), alpha));
  }
  loop_begin(c, &R, nc);
  LLVMValueRef yb = imul(c, iadd(c, imul(c, R.i, iconst(c, C)), K.i), iconst(c, HW));
  LLVMValueRef tb = iadd(c, imul(c, K.i, ld), imul(c, R.i, iconst(c, HW)));
  loop_begin(c, &L, iconst(c, HW));
  if (to_nchw && bn)
    out_store(c, fadd(c, fmul(c, loadf(c, t, iadd(c, tb, L.i)), alpha), shift), y, iadd(c, yb, L.i), K.i);
  else if (to_nchw)
    out_store(c, loadf(c, t, iadd(c, tb, L.i)), y, iadd(c, yb, L.i), K.i);
  else
    storef(c, loadf(c, y, iadd(c, yb, L.i)), t, iadd(c, tb, L.i));
  loop_end(c, &L);
  loop_end(c, &R);
  par_end(c, &K);
}

/* A chunk's columns: cols [Cin*kh*kw, nc*HoWo] = im2col of its nc samples side by side, rows (channel
 * and kernel row) in parallel; with back, x = col2im(cols), channels in parallel (each zeroed first). */
static void batch_im2col(gr_cg *c, const gr_conv_geom *g, LLVMValueRef x, LLVMValueRef cols, LLVMValueRef nc, bool back) {
  int64_t HW = g->ho * g->wo, X = g->cin * g->h * g->w;
  LLVMValueRef *vals[3] = {&x, &cols, &nc};
  cg_par P;
  par_begin(c, &P, iconst(c, back ? g->cin : g->cin * g->kh), vals, 3, (back ? g->kh : 1) * g->kw * HW * 8, 0);
  LLVMValueRef ld = imul(c, nc, iconst(c, HW));
  LLVMValueRef ch = back ? P.i : LLVMBuildSDiv(c->b, P.i, iconst(c, g->kh), ""), ki = back ? NULL : LLVMBuildSRem(c->b, P.i, iconst(c, g->kh), "");
  cg_loop R;
  loop_begin(c, &R, nc);
  LLVMValueRef xs = fptr(c, x, imul(c, R.i, iconst(c, X)));
  if (back) {
    cg_loop Z;
    LLVMValueRef plane = imul(c, ch, iconst(c, g->h * g->w));
    loop_begin(c, &Z, iconst(c, g->h * g->w));
    storef(c, fconst(c, 0), xs, iadd(c, plane, Z.i));
    loop_end(c, &Z);
  }
  im2col_rows(c, g, xs, fptr(c, cols, imul(c, R.i, iconst(c, HW))), ld, back, ch, ki);
  loop_end(c, &R);
  par_end(c, &P);
}

/* The batch in chunks of at most gr_conv_chunk samples, as equal as can be: k = ceil(n / CH) chunks of
 * ceil(n / k) (the last one smaller). Leaves the builder in the loop; every chunk reuses the staging
 * buffers. */
typedef struct conv_chunks {
  cg_loop L;
  LLVMValueRef s0, nc, first; /* first: this is the first chunk (i1) */
} conv_chunks;
static void chunks_begin(gr_cg *c, conv_chunks *k, const gr_conv_geom *g, LLVMValueRef n) {
  int64_t ch = gr_conv_chunk(g);
  LLVMValueRef count = LLVMBuildSDiv(c->b, iadd(c, n, iconst(c, ch - 1)), iconst(c, ch), "");
  LLVMValueRef size = LLVMBuildSDiv(c->b, iadd(c, n, LLVMBuildNSWSub(c->b, count, iconst(c, 1), "")), imax(c, count, iconst(c, 1)), "");
  loop_begin(c, &k->L, count);
  k->s0 = imul(c, k->L.i, size);
  k->nc = imin(c, size, LLVMBuildNSWSub(c->b, n, k->s0, ""));
  k->first = LLVMBuildICmp(c->b, LLVMIntEQ, k->L.i, iconst(c, 0), "");
}

/* Scratch of the weight gradient, for a chunk of nc samples: cols [Cin*kh*kw, nc*HoWo], then t [Cout,
 * nc*HoWo]; the forward kernel has only t, the input gradient only cols. nc never exceeds the chunk
 * size or the batch, which size the scratch (ir/shape.c, gr_scratch_elems). */
static LLVMValueRef staging(gr_cg *c, const gr_conv_geom *g, LLVMValueRef scratch, LLVMValueRef nc) {
  return fptr(c, scratch, imul(c, nc, iconst(c, g->cin * g->kh * g->kw * g->ho * g->wo)));
}

/* Per chunk of samples, per group g (K = Cin/G kh kw rows of cols, Co/G rows of t):
 *   forward       t[g] = w[g] (Co/G x K) @ im2col(x)[g] (K x nc*HoWo);  y = NCHW(t)
 *   grad_input    cols[g] = w[g]^T @ CHW(dy)[g];  dx = col2im(cols)
 *   grad_weight   cols = im2col(x);  t = CHW(dy);  dw[g] (+)= t[g] @ cols[g]^T  (summed over chunks)
 * The first two pack their B straight from x and dy as the GEMM takes its blocks (im2col_pack,
 * chw_pack): neither im2col(x) nor CHW(dy) is ever stored whole. */
static LLVMValueRef emit_conv2d(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  /* conv2d_bn: a[2..5] its batchnorm; the scratch is only the output staging t (B is packed from x) */
  LLVMValueRef x = a[0], w = a[1], y = a[nd->n_in], n = a[nd->n_in + 1], t = a[nd->n_in + 3];
  gr_conv_geom g = gr_conv_geometry(&nd->in[0]->shape, &nd->in[1]->shape, &nd->a);
  int64_t HW = g.ho * g.wo, K = g.cin / g.groups * g.kh * g.kw, cog = g.cout / g.groups;
  conv_chunks k;
  chunks_begin(c, &k, &g, n);
  LLVMValueRef ldn = imul(c, k.nc, iconst(c, HW)), ld = LLVMBuildTrunc(c->b, ldn, c->i32, "");
  LLVMValueRef xc = fptr(c, x, imul(c, k.s0, iconst(c, g.cin * g.h * g.w)));
  cg_loop G;
  loop_begin(c, &G, iconst(c, g.groups));
  LLVMValueRef pack, ctx = im2col_pack(c, &g, fptr(c, xc, imul(c, G.i, iconst(c, g.cin / g.groups * g.h * g.w))), k.nc, &pack);
  call_gemm_cb(c, false, i32c(c, cog), ld, i32c(c, K), fptr(c, w, imul(c, G.i, iconst(c, cog * K))), i32c(c, K), pack, ctx, fconst(c, 0),
               fptr(c, t, imul(c, imul(c, G.i, iconst(c, cog)), ldn)), ld);
  loop_end(c, &G);
  LLVMValueRef off = imul(c, k.s0, iconst(c, g.cout * HW)), saved[GR_FUSE_MAX_OPERANDS];
  epi_shift(c, off, saved);
  nchw_transpose(c, fptr(c, y, off), t, g.cout, HW, k.nc, true, nd->op == GR_OP_CONV2D_BN ? a + 2 : NULL, nd->a.bn_eps);
  epi_restore(c, saved);
  loop_end(c, &k.L);
  return NULL;
}

static LLVMValueRef emit_conv2d_grad_input(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef dy = a[0], w = a[1], dx = a[2], n = a[3], cols = a[5];
  gr_conv_geom g = gr_conv_geometry(&nd->a.shape, &nd->in[1]->shape, &nd->a);
  int64_t HW = g.ho * g.wo, K = g.cin / g.groups * g.kh * g.kw, cog = g.cout / g.groups;
  conv_chunks k;
  chunks_begin(c, &k, &g, n);
  LLVMValueRef ldn = imul(c, k.nc, iconst(c, HW)), ld = LLVMBuildTrunc(c->b, ldn, c->i32, "");
  LLVMValueRef dyc = fptr(c, dy, imul(c, k.s0, iconst(c, g.cout * HW)));
  cg_loop G;
  loop_begin(c, &G, iconst(c, g.groups));
  LLVMValueRef pack, ctx = chw_pack(c, &g, fptr(c, dyc, imul(c, G.i, iconst(c, cog * HW))), k.nc, &pack);
  call_gemm_cb(c, true, i32c(c, K), ld, i32c(c, cog), fptr(c, w, imul(c, G.i, iconst(c, cog * K))), i32c(c, K), pack, ctx, fconst(c, 0),
               fptr(c, cols, imul(c, imul(c, G.i, iconst(c, K)), ldn)), ld);
  loop_end(c, &G);
  batch_im2col(c, &g, fptr(c, dx, imul(c, k.s0, iconst(c, g.cin * g.h * g.w))), cols, k.nc, true);
  loop_end(c, &k.L);
  return NULL;
}

static LLVMValueRef emit_conv2d_grad_weight(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], dy = a[1], dw = a[2], n = a[3], cols = a[5];
  gr_conv_geom g = gr_conv_geometry(&nd->in[0]->shape, &nd->a.shape, &nd->a);
  int64_t HW = g.ho * g.wo, K = g.cin / g.groups * g.kh * g.kw, cog = g.cout / g.groups;
  conv_chunks k;
  chunks_begin(c, &k, &g, n);
  LLVMValueRef t = staging(c, &g, cols, k.nc);
  LLVMValueRef ldn = imul(c, k.nc, iconst(c, HW)), ld = LLVMBuildTrunc(c->b, ldn, c->i32, "");
  batch_im2col(c, &g, fptr(c, x, imul(c, k.s0, iconst(c, g.cin * g.h * g.w))), cols, k.nc, false);
  nchw_transpose(c, fptr(c, dy, imul(c, k.s0, iconst(c, g.cout * HW))), t, g.cout, HW, k.nc, false, NULL, 0);
  LLVMValueRef beta = LLVMBuildSelect(c->b, k.first, fconst(c, 0), fconst(c, 1), ""); /* the chunks' sum */
  cg_loop G;
  loop_begin(c, &G, iconst(c, g.groups));
  call_gemm(c, false, true, i32c(c, cog), i32c(c, K), ld, fptr(c, t, imul(c, imul(c, G.i, iconst(c, cog)), ldn)), ld,
            fptr(c, cols, imul(c, imul(c, G.i, iconst(c, K)), ldn)), ld, beta, fptr(c, dw, imul(c, G.i, iconst(c, cog * K))), i32c(c, K));
  loop_end(c, &G);
  loop_end(c, &k.L);
  return NULL;
}

/* Walks the pooling windows of x [N, C, H, W] -> [N, C, Ho, Wo]. For each output it computes the
 * first maximal input index (PyTorch's choice; a NaN wins, so NaN propagates) and hands it to `fn`. */
typedef void (*window_fn)(gr_cg *c, LLVMValueRef best_val, LLVMValueRef best_idx, LLVMValueRef out_idx, LLVMValueRef *extra);

/* Whether v replaces the best value so far of a max-pooling window: greater, or NaN (PyTorch's choice:
 * the first maximum stays, a NaN propagates). */
static LLVMValueRef max_takes(gr_cg *c, LLVMValueRef v, LLVMValueRef best) {
  return LLVMBuildOr(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, v, best, ""), LLVMBuildFCmp(c->b, LLVMRealUNO, v, v, ""), "");
}
static void for_each_window(gr_cg *c, const gr_node *nd, LLVMValueRef x, LLVMValueRef n, window_fn fn, LLVMValueRef *extra) {
  const gr_shape *xs = &nd->in[0]->shape;
  int64_t C = xs->dim[1], H = xs->dim[2], W = xs->dim[3];
  const gr_attrs *at = &nd->a;
  int64_t Ho = (H + 2 * at->pad[0] - at->kernel[0]) / at->stride[0] + 1, Wo = (W + 2 * at->pad[1] - at->kernel[1]) / at->stride[1] + 1;
  cg_loop OH, OW, KI, KJ;
  LLVMValueRef e0 = extra[0], e1 = extra[1] ? extra[1] : x, ex[2];
  LLVMValueRef *vals[4] = {&x, &n, &e0, &e1};
  cg_par P; /* planes (sample x channel) in parallel */
  par_begin(c, &P, imul(c, n, iconst(c, C)), vals, 4, Ho * Wo * at->kernel[0] * at->kernel[1], 0xA);
  LLVMValueRef xb = imul(c, P.i, iconst(c, H * W)), ob = imul(c, P.i, iconst(c, Ho * Wo));
  loop_begin(c, &OH, iconst(c, Ho));
  loop_begin(c, &OW, iconst(c, Wo));
  loop_begin(c, &KI, iconst(c, at->kernel[0]));
  LLVMValueRef bv = loop_phi(c, &KI, c->ft, fconst(c, -INFINITY)), bi = loop_phi(c, &KI, c->i64, iconst(c, -1));
  LLVMValueRef ih = iadd(c, iadd(c, imul(c, OH.i, iconst(c, at->stride[0])), iconst(c, -at->pad[0])), KI.i);
  loop_begin(c, &KJ, iconst(c, at->kernel[1]));
  LLVMValueRef v2 = loop_phi(c, &KJ, c->ft, bv), i2 = loop_phi(c, &KJ, c->i64, bi);
  LLVMValueRef iw = iadd(c, iadd(c, imul(c, OW.i, iconst(c, at->stride[1])), iconst(c, -at->pad[1])), KJ.i);
  LLVMValueRef ok = LLVMBuildAnd(c->b, in_range(c, ih, H), in_range(c, iw, W), "");
  LLVMValueRef xi = LLVMBuildSelect(c->b, ok, iadd(c, xb, iadd(c, imul(c, ih, iconst(c, W)), iw)), xb, "");
  LLVMValueRef v = loadf(c, x, xi);
  /* as PyTorch: take v if it is the first valid one, greater, or NaN */
  LLVMValueRef better = LLVMBuildOr(c->b, max_takes(c, v, v2), LLVMBuildICmp(c->b, LLVMIntSLT, i2, iconst(c, 0), ""), "");
  better = LLVMBuildAnd(c->b, ok, better, "");
  loop_carry(&KJ, v2, LLVMBuildSelect(c->b, better, v, v2, ""));
  loop_carry(&KJ, i2, LLVMBuildSelect(c->b, better, xi, i2, ""));
  loop_end(c, &KJ);
  loop_carry(&KI, bv, v2);
  loop_carry(&KI, bi, i2);
  loop_end(c, &KI);
  ex[0] = e0;
  ex[1] = e1;
  fn(c, bv, bi, iadd(c, ob, iadd(c, imul(c, OH.i, iconst(c, Wo)), OW.i)), ex);
  loop_end(c, &OW);
  loop_end(c, &OH);
  par_end(c, &P);
}

static void pool_store_max(gr_cg *c, LLVMValueRef best_val, LLVMValueRef best_idx, LLVMValueRef out_idx, LLVMValueRef *extra) {
  (void)best_idx;
  storef(c, best_val, extra[0], out_idx);
}

static void pool_scatter_grad(gr_cg *c, LLVMValueRef best_val, LLVMValueRef best_idx, LLVMValueRef out_idx, LLVMValueRef *extra) {
  (void)best_val;
  LLVMValueRef dx = extra[0], dy = extra[1];
  storef(c, fadd(c, loadf(c, dx, best_idx), loadf(c, dy, out_idx)), dx, best_idx);
}

/* Whether every node of the fused epilogue computes on vectors as its emitter stands (no libm call, no
 * intrinsic of the scalar type). */
static bool epi_vectorises(const gr_cg *c) {
  for (int k = 0; c->epi && k < c->epi->n; k++)
    switch (c->epi->nodes[k]->op) {
    case GR_OP_ADD: case GR_OP_MUL: case GR_OP_RELU: case GR_OP_RELU_GRAD: case GR_OP_BIAS_ADD: break;
    default: return false;
    }
  return true;
}

/* Max pooling when the windows tile x (stride = kernel, no padding; the usual 2 x 2): forward (dy
 * NULL) out = y, the window maxima; backward out = dx, written whole: dy at each window's argmax, 0
 * elsewhere (rows and columns past the last window too), since each input is in at most one window.
 * Both take the first maximum, or a NaN, as for_each_window does. With windows 2 wide, 16 windows of
 * a row at a time on vectors: each of the window's rows loaded as 32 lanes and split into its even
 * and odd columns, comparisons and selects lane-wise, and dx's rows put back together with shuffles
 * (LLVM's own vectorisation of the scalar form gathers, slower than scalar code). Other widths walk
 * the windows in straight-line scalar code. */
static void tiled_pool(gr_cg *c, const gr_node *nd, LLVMValueRef x, LLVMValueRef dy, LLVMValueRef out, LLVMValueRef n) {
  const gr_shape *xs = &nd->in[0]->shape;
  int64_t C = xs->dim[1], H = xs->dim[2], W = xs->dim[3], kh = nd->a.kernel[0], kw = nd->a.kernel[1];
  int64_t Ho = H / kh, Wo = W / kw;
  bool vec = kw == 2 && epi_vectorises(c);
  LLVMValueRef *vals[4] = {&x, &out, &n, &dy};
  cg_par P; /* planes (sample x channel) in parallel */
  par_begin(c, &P, imul(c, n, iconst(c, C)), vals, dy ? 4 : 3, H * W, 0);
  LLVMValueRef xb = imul(c, P.i, iconst(c, H * W)), ob = imul(c, P.i, iconst(c, Ho * Wo)), ch = LLVMBuildSRem(c->b, P.i, iconst(c, C), "");
  cg_loop OH, OW;
  loop_begin(c, &OH, iconst(c, Ho));
  LLVMValueRef row = iadd(c, xb, imul(c, OH.i, iconst(c, kh * W))), orow = iadd(c, ob, imul(c, OH.i, iconst(c, Wo)));
  if (vec) {
    int even[16], odd[16], inter[32];
    for (int i = 0; i < 16; i++) even[i] = 2 * i, odd[i] = 2 * i + 1, inter[2 * i] = i, inter[2 * i + 1] = 16 + i;
    LLVMTypeRef iv = LLVMVectorType(c->i32, 16);
    for (int64_t j = 0; j < Wo; j += 16) {
      int64_t cnt = Wo - j < 16 ? Wo - j : 16;
      LLVMValueRef best = NULL, arg = LLVMConstNull(iv);
      for (int64_t ki = 0; ki < kh; ki++) {
        LLVMValueRef v = vload(c, x, iadd(c, row, iconst(c, ki * W + 2 * j)), 32, 2 * cnt);
        for (int kj = 0; kj < 2; kj++) {
          LLVMValueRef cand = shuffle(c, v, v, 16, kj ? odd : even);
          if (!best) {
            best = cand;
            continue;
          }
          LLVMValueRef take = max_takes(c, cand, best);
          best = LLVMBuildSelect(c->b, take, cand, best, "");
          arg = LLVMBuildSelect(c->b, take, isplat(c, ki * 2 + kj), arg, "");
        }
      }
      if (!dy) {
        vstore(c, best, out, iadd(c, orow, iconst(c, j)), 16, cnt);
        continue;
      }
      LLVMValueRef g = vload(c, dy, iadd(c, orow, iconst(c, j)), 16, cnt);
      LLVMValueRef zero = splat(c, LLVMConstReal(c->ft, 0), 16);
      for (int64_t ki = 0; ki < kh; ki++) {
        LLVMValueRef half[2];
        for (int kj = 0; kj < 2; kj++) {
          half[kj] = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntEQ, arg, isplat(c, ki * 2 + kj), ""), g, zero, "");
        }
        out_store_n(c, shuffle(c, half[0], half[1], 32, inter), out, iadd(c, row, iconst(c, ki * W + 2 * j)), 32, 2 * cnt, ch);
      }
    }
  } else {
    loop_begin(c, &OW, iconst(c, Wo));
    LLVMValueRef win = iadd(c, row, imul(c, OW.i, iconst(c, kw)));
    LLVMValueRef bv = loadf(c, x, win), bk = iconst(c, 0); /* best value, and which of the window's kh*kw */
    for (int64_t k = 1; k < kh * kw; k++) {
      LLVMValueRef v = loadf(c, x, iadd(c, win, iconst(c, k / kw * W + k % kw))), better = max_takes(c, v, bv);
      bv = LLVMBuildSelect(c->b, better, v, bv, "");
      bk = LLVMBuildSelect(c->b, better, iconst(c, k), bk, "");
    }
    if (!dy) {
      out_store(c, bv, out, iadd(c, orow, OW.i), ch);
    } else {
      LLVMValueRef g = loadf(c, dy, iadd(c, orow, OW.i));
      for (int64_t k = 0; k < kh * kw; k++) {
        LLVMValueRef hit = LLVMBuildICmp(c->b, LLVMIntEQ, bk, iconst(c, k), "");
        out_store(c, LLVMBuildSelect(c->b, hit, g, fconst(c, 0), ""), out, iadd(c, win, iconst(c, k / kw * W + k % kw)), ch);
      }
    }
    loop_end(c, &OW);
  }
  for (int64_t i = 0; dy && i < kh && W % kw; i++) { /* the columns no window covers */
    LLVMValueRef rb = iadd(c, row, iconst(c, i * W + Wo * kw));
    loop_begin(c, &OW, iconst(c, W - Wo * kw));
    out_store(c, fconst(c, 0), out, iadd(c, rb, OW.i), ch);
    loop_end(c, &OW);
  }
  loop_end(c, &OH);
  if (dy && H % kh) { /* the rows no window covers */
    loop_begin(c, &OW, iconst(c, (H - Ho * kh) * W));
    out_store(c, fconst(c, 0), out, iadd(c, iadd(c, xb, iconst(c, Ho * kh * W)), OW.i), ch);
    loop_end(c, &OW);
  }
  par_end(c, &P);
}

/* Max pooling whose windows start 2 columns apart but do not tile x (ResNet's stem: 3 x 3, stride 2,
 * padding 1), on vectors: for 16 windows of an output row at a time, each window offset (ki, kj) is
 * one 32-lane load of x's row from column 2j - pw + kj, whose even lanes are the 16 windows'
 * candidates. Lanes over the padding, past the row or past the last window load -inf (constant
 * masks), and a row over the padding is -inf whole (a select on its scalar condition), so they never
 * win; the comparisons are for_each_window's (the first maximum, or a NaN), so y is the same.
 * Backward (dy given), each window's argmax starts at its first position inside x, as PyTorch's
 * does, and goes to the offset that wins; each plane of dx is zeroed, then for every kernel row and
 * pair of kernel columns (kj, kj + 1) one 32-lane add puts dy where the windows took it and zeros
 * elsewhere (dx is never -0, so adding a zero changes nothing), under a constant mask of the row's
 * lanes. Pairs go from the right, so that every input receives its windows' shares in the order
 * for_each_window's scatter adds them (windows by rows, then by columns): the same sums, to the bit.
 * All masks are constants or scalar selects: vectors of i1 built at run time (ANDs, ORs, shuffles)
 * cost more on AVX2 than the pooling itself. A fused epilogue then runs over the plane while it is
 * in cache (scalar code: any epilogue). The blocks of 16 windows are unrolled as the code is
 * generated (Wo / 16 of them per row). */
static bool pool_strided2(const gr_node *nd) {
  const gr_attrs *a = &nd->a;
  return a->stride[1] == 2 && !gr_pool_tiles(a) && a->kernel[0] <= 16 && a->kernel[1] <= 16;
}

/* The constant mask of the 32 lanes t from column c0 = 2j - pw + kj of a row W wide: t % 2 == parity
 * (or any lane with parity < 0), t / 2 a window (< cnt), the column inside the row; *any: a lane is on. */
static LLVMValueRef pool_lanes(gr_cg *c, int64_t c0, int64_t W, int64_t cnt, int parity, int64_t kw, int64_t kj, bool *any) {
  LLVMValueRef b[32];
  *any = false;
  for (int64_t t = 0; t < 32; t++) {
    bool on = (parity < 0 || t % 2 == parity) && t / 2 < cnt && c0 + t >= 0 && c0 + t < W && kj + t % 2 < kw;
    b[t] = LLVMConstInt(LLVMInt1TypeInContext(c->ctx), on, 0);
    *any |= on;
  }
  return LLVMConstVector(b, 32);
}

static void strided_pool(gr_cg *c, const gr_node *nd, LLVMValueRef x, LLVMValueRef dy, LLVMValueRef out, LLVMValueRef n) {
  const gr_shape *xs = &nd->in[0]->shape;
  const gr_attrs *at = &nd->a;
  int64_t C = xs->dim[1], H = xs->dim[2], W = xs->dim[3], kh = at->kernel[0], kw = at->kernel[1], sh = at->stride[0];
  int64_t ph = at->pad[0], pw = at->pad[1], Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / 2 + 1;
  int even[16], inter[32];
  for (int i = 0; i < 16; i++) even[i] = 2 * i, inter[2 * i] = i, inter[2 * i + 1] = 16 + i;
  LLVMTypeRef vt = LLVMVectorType(c->ft, 32);
  LLVMValueRef align = LLVMConstInt(c->i32, elem_align(c), 0), zero16 = splat(c, LLVMConstReal(c->ft, 0), 16);
  LLVMValueRef ninf16 = splat(c, LLVMConstReal(c->ft, -INFINITY), 16), ninf32 = splat(c, LLVMConstReal(c->ft, -INFINITY), 32);
  LLVMValueRef *vals[4] = {&x, &out, &n, &dy};
  cg_par P; /* planes (sample x channel) in parallel */
  par_begin(c, &P, imul(c, n, iconst(c, C)), vals, dy ? 4 : 3, H * W * 2, 0);
  LLVMValueRef xb = imul(c, P.i, iconst(c, H * W)), ob = imul(c, P.i, iconst(c, Ho * Wo)), ch = LLVMBuildSRem(c->b, P.i, iconst(c, C), "");
  cg_loop OH, L;
  if (dy) {
    loop_begin(c, &L, iconst(c, H * W));
    storef(c, fconst(c, 0), out, iadd(c, xb, L.i));
    loop_end(c, &L);
  }
  loop_begin(c, &OH, iconst(c, Ho));
  LLVMValueRef orow = iadd(c, ob, imul(c, OH.i, iconst(c, Wo))), row[16], row_ok[16], ki0 = iconst(c, 0);
  for (int64_t ki = 0; ki < kh; ki++) { /* a row over the padding reads row 0 and is replaced by -inf */
    LLVMValueRef ih = iadd(c, imul(c, OH.i, iconst(c, sh)), iconst(c, ki - ph));
    row_ok[ki] = in_range(c, ih, H);
    row[ki] = iadd(c, xb, imul(c, LLVMBuildSelect(c->b, row_ok[ki], ih, iconst(c, 0), ""), iconst(c, W)));
  }
  for (int64_t ki = kh - 1; ki >= 0; ki--) ki0 = LLVMBuildSelect(c->b, row_ok[ki], iconst(c, ki), ki0, ""); /* the first row inside x */
  ki0 = LLVMBuildTrunc(c->b, imul(c, ki0, iconst(c, kw)), c->i32, "");
  for (int64_t j = 0; j < Wo; j += 16) {
    int64_t cnt = Wo - j < 16 ? Wo - j : 16;
    LLVMValueRef m32[16], kj0[16];
    bool any[16];
    for (int64_t kj = 0; kj < kw; kj++) m32[kj] = pool_lanes(c, 2 * j - pw + kj, W, cnt, 0, kw, 0, &any[kj]);
    for (int64_t w = 0; w < 16; w++) { /* each window's first column inside x */
      int64_t first = 0;
      while (first < kw - 1 && 2 * (j + w) - pw + first < 0) first++;
      kj0[w] = LLVMConstInt(c->i32, (unsigned long long)first, 0);
    }
    LLVMValueRef best = ninf16, arg = LLVMBuildAdd(c->b, splat(c, ki0, 16), LLVMConstVector(kj0, 16), "");
    for (int64_t ki = 0; ki < kh; ki++)
      for (int64_t kj = 0; kj < kw; kj++) {
        if (!any[kj]) continue;
        LLVMValueRef args[4] = {raw_fptr(c, x, iadd(c, row[ki], iconst(c, 2 * j - pw + kj))), align, m32[kj], ninf32};
        LLVMValueRef cand = shuffle(c, masked_op(c, "llvm.masked.load", vt, args, 4), LLVMGetUndef(vt), 16, even);
        cand = LLVMBuildSelect(c->b, row_ok[ki], cand, ninf16, "");
        LLVMValueRef take = max_takes(c, cand, best);
        best = LLVMBuildSelect(c->b, take, cand, best, "");
        if (dy) arg = LLVMBuildSelect(c->b, take, isplat(c, ki * kw + kj), arg, "");
      }
    if (!dy) { /* no forward epilogue: max pooling is not an anchor (gr_fuse_anchor) */
      GR_ASSERT(!c->epi);
      vstore(c, best, out, iadd(c, orow, iconst(c, j)), 16, cnt);
      continue;
    }
    LLVMValueRef g = vload(c, dy, iadd(c, orow, iconst(c, j)), 16, cnt);
    for (int64_t ki = 0; ki < kh; ki++)
      for (int64_t kj = (kw - 1) & ~(int64_t)1; kj >= 0; kj -= 2) {
        bool on;
        LLVMValueRef mask = pool_lanes(c, 2 * j - pw + kj, W, cnt, -1, kw, kj, &on), share[2];
        if (!on) continue;
        for (int q = 0; q < 2; q++) {
          LLVMValueRef hit = LLVMBuildICmp(c->b, LLVMIntEQ, arg, isplat(c, ki * kw + kj + q), "");
          share[q] = kj + q < kw ? LLVMBuildSelect(c->b, hit, g, zero16, "") : zero16;
        }
        LLVMValueRef p = raw_fptr(c, out, iadd(c, row[ki], iconst(c, 2 * j - pw + kj)));
        LLVMValueRef largs[4] = {p, align, mask, LLVMConstNull(vt)};
        LLVMValueRef sargs[4] = {fadd(c, masked_op(c, "llvm.masked.load", vt, largs, 4), shuffle(c, share[0], share[1], 32, inter)), p, align, mask};
        masked_op(c, "llvm.masked.store", vt, sargs, 4);
      }
  }
  loop_end(c, &OH);
  if (dy && c->epi) { /* the fused epilogue, in place over the finished plane */
    loop_begin(c, &L, iconst(c, H * W));
    LLVMValueRef i = iadd(c, xb, L.i);
    out_store(c, loadf(c, out, i), out, i, ch);
    loop_end(c, &L);
  }
  par_end(c, &P);
}

/* Average pooling over x [N, C, H, W], divisor kh*kw (count_include_pad): forward y = window sums
 * / area; backward (dy given) dx[i] += dy[window] / area for every window containing i. */
static void avg_windows(gr_cg *c, const gr_node *nd, LLVMValueRef x, LLVMValueRef dy, LLVMValueRef out, LLVMValueRef n) {
  const gr_shape *xs = &nd->in[0]->shape;
  int64_t C = xs->dim[1], H = xs->dim[2], W = xs->dim[3];
  const gr_attrs *at = &nd->a;
  int64_t Ho = (H + 2 * at->pad[0] - at->kernel[0]) / at->stride[0] + 1, Wo = (W + 2 * at->pad[1] - at->kernel[1]) / at->stride[1] + 1;
  LLVMValueRef inv = fconst(c, 1.0 / (double)(at->kernel[0] * at->kernel[1]));
  if (dy) { /* dx = 0 first */
    cg_loop Z;
    loop_begin(c, &Z, imul(c, n, iconst(c, C * H * W)));
    storef(c, fconst(c, 0), out, Z.i);
    loop_end(c, &Z);
  }
  cg_loop P, OH, OW, KI, KJ;
  loop_begin(c, &P, imul(c, n, iconst(c, C)));
  LLVMValueRef xb = imul(c, P.i, iconst(c, H * W)), ob = imul(c, P.i, iconst(c, Ho * Wo));
  loop_begin(c, &OH, iconst(c, Ho));
  loop_begin(c, &OW, iconst(c, Wo));
  LLVMValueRef oi = iadd(c, ob, iadd(c, imul(c, OH.i, iconst(c, Wo)), OW.i));
  LLVMValueRef g = dy ? fmul(c, loadf(c, dy, oi), inv) : NULL;
  LLVMValueRef acc = dy ? NULL : cg_var(c, c->ft, fconst(c, 0));
  loop_begin(c, &KI, iconst(c, at->kernel[0]));
  LLVMValueRef ih = iadd(c, iadd(c, imul(c, OH.i, iconst(c, at->stride[0])), iconst(c, -at->pad[0])), KI.i);
  loop_begin(c, &KJ, iconst(c, at->kernel[1]));
  LLVMValueRef iw = iadd(c, iadd(c, imul(c, OW.i, iconst(c, at->stride[1])), iconst(c, -at->pad[1])), KJ.i);
  LLVMValueRef ok = LLVMBuildAnd(c->b, in_range(c, ih, H), in_range(c, iw, W), "");
  LLVMValueRef xi = LLVMBuildSelect(c->b, ok, iadd(c, xb, iadd(c, imul(c, ih, iconst(c, W)), iw)), xb, "");
  if (dy) {
    LLVMBasicBlockRef join = cg_if_begin(c, ok);
    storef(c, fadd(c, loadf(c, out, xi), g), out, xi);
    cg_if_end(c, join);
  } else {
    LLVMValueRef v = LLVMBuildSelect(c->b, ok, loadf(c, x, xi), fconst(c, 0), "");
    LLVMBuildStore(c->b, fadd(c, LLVMBuildLoad2(c->b, c->ft, acc, ""), v), acc);
  }
  loop_end(c, &KJ);
  loop_end(c, &KI);
  if (!dy) storef(c, fmul(c, LLVMBuildLoad2(c->b, c->ft, acc, ""), inv), out, oi);
  loop_end(c, &OW);
  loop_end(c, &OH);
  loop_end(c, &P);
}

static LLVMValueRef emit_avgpool2d(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  avg_windows(c, nd, a[0], NULL, a[1], a[2]);
  return NULL;
}

static LLVMValueRef emit_avgpool2d_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  avg_windows(c, nd, a[0], a[1], a[2], a[3]);
  return NULL;
}

/* y = max over each window (padding never wins) */
static LLVMValueRef emit_maxpool2d(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  if (gr_pool_tiles(&nd->a)) return tiled_pool(c, nd, a[0], NULL, a[1], a[2]), NULL;
  if (pool_strided2(nd)) return strided_pool(c, nd, a[0], NULL, a[1], a[2]), NULL;
  LLVMValueRef extra[2] = {a[1], NULL};
  for_each_window(c, nd, a[0], a[2], pool_store_max, extra);
  return NULL;
}

/* dx = 0; dx[argmax of each window] += dy[window] */
static LLVMValueRef emit_maxpool2d_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], dy = a[1], dx = a[2], n = a[3];
  if (gr_pool_tiles(&nd->a)) return tiled_pool(c, nd, x, dy, dx, n), NULL;
  if (pool_strided2(nd)) return strided_pool(c, nd, x, dy, dx, n), NULL;
  cg_loop Z;
  loop_begin(c, &Z, imul(c, n, iconst(c, gr_shape_inner(&nd->in[0]->shape))));
  storef(c, fconst(c, 0), dx, Z.i);
  loop_end(c, &Z);
  LLVMValueRef extra[2] = {dx, dy};
  for_each_window(c, nd, x, n, pool_scatter_grad, extra);
  if (c->epi) { /* a fused epilogue, once every window has added its share: in place, by planes */
    const gr_shape *xs = &nd->in[0]->shape;
    int64_t C = xs->dim[1], HW = xs->dim[2] * xs->dim[3];
    LLVMValueRef *vals[1] = {&dx};
    cg_par P;
    cg_loop L;
    par_begin(c, &P, imul(c, n, iconst(c, C)), vals, 1, HW, 0);
    LLVMValueRef base = imul(c, P.i, iconst(c, HW)), ch = LLVMBuildSRem(c->b, P.i, iconst(c, C), "");
    loop_begin(c, &L, iconst(c, HW));
    LLVMValueRef i = iadd(c, base, L.i);
    out_store(c, loadf(c, dx, i), dx, i, ch);
    loop_end(c, &L);
    par_end(c, &P);
  }
  return NULL;
}

/* For row r of x [N, C]: its max m and s = sum_c exp(x[r,c] - m). Leaves the builder in the row loop. */
static void row_max_sumexp(gr_cg *c, LLVMValueRef row, int64_t C, LLVMValueRef *m_out, LLVMValueRef *s_out) {
  cg_loop L;
  loop_begin(c, &L, iconst(c, C));
  LLVMValueRef m = loop_phi(c, &L, c->ft, fconst(c, -INFINITY));
  LLVMValueRef v = loadf(c, row, L.i);
  loop_carry(&L, m, LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, v, m, ""), v, m, ""));
  loop_end(c, &L);
  loop_begin(c, &L, iconst(c, C));
  LLVMValueRef s = loop_phi(c, &L, c->ft, fconst(c, 0));
  loop_carry(&L, s, fadd(c, s, fexp(c, fsub(c, loadf(c, row, L.i), m))));
  loop_end(c, &L);
  *m_out = m;
  *s_out = s;
}

static LLVMValueRef load_label(gr_cg *c, LLVMValueRef labels, LLVMValueRef r) {
  LLVMValueRef t = LLVMBuildLoad2(c->b, c->i32, elem_ptr(c, c->i32, labels, r), "");
  return LLVMBuildSExt(c->b, t, c->i64, "");
}

/* Rows whose label is negative are ignored (PyTorch's ignore_index): domain adaptation marks the
 * unlabelled target rows of a batch so. The count of the others, at least 1, as a float. */
static LLVMValueRef labelled_rows(gr_cg *c, LLVMValueRef labels, LLVMValueRef n) {
  cg_loop R;
  loop_begin(c, &R, n);
  LLVMValueRef cnt = loop_phi(c, &R, c->i64, iconst(c, 0));
  LLVMValueRef valid = LLVMBuildICmp(c->b, LLVMIntSGE, load_label(c, labels, R.i), iconst(c, 0), "");
  loop_carry(&R, cnt, iadd(c, cnt, LLVMBuildZExt(c->b, valid, c->i64, "")));
  loop_end(c, &R);
  LLVMValueRef one = iconst(c, 1);
  LLVMValueRef atleast = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, cnt, one, ""), one, cnt, "");
  return LLVMBuildSIToFP(c->b, atleast, c->ft, "");
}

/* Row r of the cross-entropy gradient (see emit_softmax_ce_grad) into orow, given the row's max m and
 * sum of exponentials s, its label t and whether it is labelled. */
static void ce_grad_row(gr_cg *c, const gr_node *nd, LLVMValueRef row, LLVMValueRef orow, LLVMValueRef m, LLVMValueRef s, LLVMValueRef t,
                        LLVMValueRef valid, LLVMValueRef dl, LLVMValueRef count) {
  int64_t C = nd->in[0]->shape.dim[1];
  /* an ignored row: scale 0 gives a zero row; its label is read as 0 */
  LLVMValueRef scale = LLVMBuildSelect(c->b, valid, fdiv(c, loadf(c, dl, iconst(c, 0)), count), fconst(c, 0), "");
  t = LLVMBuildSelect(c->b, valid, t, iconst(c, 0), "");
  LLVMValueRef k = fdiv(c, scale, s);
  double e = nd->a.smoothing;
  LLVMValueRef uniform = fmul(c, scale, fconst(c, e / (double)C));
  cg_loop L;
  loop_begin(c, &L, iconst(c, C));
  LLVMValueRef p = fmul(c, fexp(c, fsub(c, loadf(c, row, L.i), m)), k);
  storef(c, e > 0 ? fsub(c, p, uniform) : p, orow, L.i);
  loop_end(c, &L);
  storef(c, fsub(c, loadf(c, orow, t), fmul(c, scale, fconst(c, 1 - e))), orow, t);
}

/* loss = (1/N') sum_r [ m_r + log s_r - x[r, t_r] ] over the N' rows with a label t_r >= 0; fused
 * with its gradient (fuse.c), each row's gradient too, from the same max and sum */
static LLVMValueRef emit_softmax_ce(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], labels = a[1], out = a[2], n = a[3];
  int64_t C = nd->in[0]->shape.dim[1];
  LLVMValueRef count = labelled_rows(c, labels, n);
  LLVMValueRef dx = sib_ptr(c, GR_OP_SOFTMAX_CE_GRAD, 0), dl = sib_ptr(c, GR_OP_SOFTMAX_CE_GRAD, 1);
  cg_loop R;
  loop_begin(c, &R, n);
  LLVMValueRef acc = loop_phi(c, &R, c->ft, fconst(c, 0));
  LLVMValueRef row = elem_ptr(c, c->ft, x, imul(c, R.i, iconst(c, C)));
  LLVMValueRef m, s;
  row_max_sumexp(c, row, C, &m, &s);
  LLVMValueRef lse = fadd(c, m, flog(c, s));
  LLVMValueRef t = load_label(c, labels, R.i), valid = LLVMBuildICmp(c->b, LLVMIntSGE, t, iconst(c, 0), "");
  LLVMValueRef nll = fsub(c, lse, loadf(c, row, LLVMBuildSelect(c->b, valid, t, iconst(c, 0), "")));
  double e = nd->a.smoothing;
  if (e > 0) { /* (1-e) nll + e (lse - mean_j x_j), as torch.nn.CrossEntropyLoss(label_smoothing=e) */
    cg_loop L;
    loop_begin(c, &L, iconst(c, C));
    LLVMValueRef sum = loop_phi(c, &L, c->ft, fconst(c, 0));
    loop_carry(&L, sum, fadd(c, sum, loadf(c, row, L.i)));
    loop_end(c, &L);
    nll = fadd(c, fmul(c, fconst(c, 1 - e), nll), fmul(c, fconst(c, e), fsub(c, lse, fdiv(c, sum, fconst(c, (double)C)))));
  }
  if (dx) ce_grad_row(c, nd, row, elem_ptr(c, c->ft, dx, imul(c, R.i, iconst(c, C))), m, s, t, valid, dl, count);
  loop_carry(&R, acc, fadd(c, acc, LLVMBuildSelect(c->b, valid, nll, fconst(c, 0), "")));
  loop_end(c, &R);
  storef(c, fdiv(c, acc, count), out, iconst(c, 0));
  return NULL;
}

/* Row-wise ops over the last dimension C of x: rows = n * (numel per sample / C). */
static LLVMValueRef row_count(gr_cg *c, const gr_shape *s, LLVMValueRef n) {
  return imul(c, n, iconst(c, gr_shape_inner(s) / s->dim[s->rank - 1]));
}

/* y = exp(x - m) / s per row (log: y = x - m - log s) */
static void softmax_rows(gr_cg *c, const gr_node *nd, LLVMValueRef x, LLVMValueRef y, LLVMValueRef n, bool log) {
  int64_t C = nd->in[0]->shape.dim[nd->in[0]->shape.rank - 1];
  cg_loop R, L;
  loop_begin(c, &R, row_count(c, &nd->in[0]->shape, n));
  LLVMValueRef base = imul(c, R.i, iconst(c, C)), row = fptr(c, x, base), yrow = fptr(c, y, base), m, s;
  row_max_sumexp(c, row, C, &m, &s);
  LLVMValueRef lse = fadd(c, m, flog(c, s)), inv = fdiv(c, fconst(c, 1), s);
  loop_begin(c, &L, iconst(c, C));
  LLVMValueRef v = loadf(c, row, L.i);
  storef(c, log ? fsub(c, v, lse) : fmul(c, fexp(c, fsub(c, v, m)), inv), yrow, L.i);
  loop_end(c, &L);
  loop_end(c, &R);
}

static LLVMValueRef emit_softmax(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  softmax_rows(c, nd, a[0], a[1], a[2], false);
  return NULL;
}

static LLVMValueRef emit_log_softmax(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  softmax_rows(c, nd, a[0], a[1], a[2], true);
  return NULL;
}

/* (y, dy) -> softmax: y (dy - sum(dy y));  log_softmax: dy - exp(y) sum(dy) */
static void softmax_grad_rows(gr_cg *c, const gr_node *nd, LLVMValueRef y, LLVMValueRef dy, LLVMValueRef dx, LLVMValueRef n, bool log) {
  int64_t C = nd->in[0]->shape.dim[nd->in[0]->shape.rank - 1];
  cg_loop R, L;
  loop_begin(c, &R, row_count(c, &nd->in[0]->shape, n));
  LLVMValueRef base = imul(c, R.i, iconst(c, C)), yr = fptr(c, y, base), dyr = fptr(c, dy, base), dxr = fptr(c, dx, base);
  loop_begin(c, &L, iconst(c, C));
  LLVMValueRef acc = loop_phi(c, &L, c->ft, fconst(c, 0));
  LLVMValueRef term = log ? loadf(c, dyr, L.i) : fmul(c, loadf(c, dyr, L.i), loadf(c, yr, L.i));
  loop_carry(&L, acc, fadd(c, acc, term));
  loop_end(c, &L);
  loop_begin(c, &L, iconst(c, C));
  LLVMValueRef yv = loadf(c, yr, L.i), d = loadf(c, dyr, L.i);
  storef(c, log ? fsub(c, d, fmul(c, fexp(c, yv), acc)) : fmul(c, yv, fsub(c, d, acc)), dxr, L.i);
  loop_end(c, &L);
  loop_end(c, &R);
}

static LLVMValueRef emit_softmax_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  softmax_grad_rows(c, nd, a[0], a[1], a[2], a[3], false);
  return NULL;
}

static LLVMValueRef emit_log_softmax_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  softmax_grad_rows(c, nd, a[0], a[1], a[2], a[3], true);
  return NULL;
}

/* dx[r, j] = dL/N' * (exp(x[r,j] - m_r) / s_r - [j == t_r]); 0 on rows whose label is negative */
static LLVMValueRef emit_softmax_ce_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], labels = a[1], dl = a[2], out = a[3], n = a[4];
  int64_t C = nd->in[0]->shape.dim[1];
  LLVMValueRef count = labelled_rows(c, labels, n);
  cg_loop R;
  loop_begin(c, &R, n);
  LLVMValueRef t = load_label(c, labels, R.i), valid = LLVMBuildICmp(c->b, LLVMIntSGE, t, iconst(c, 0), "");
  LLVMValueRef base = imul(c, R.i, iconst(c, C));
  LLVMValueRef row = elem_ptr(c, c->ft, x, base), m, s;
  row_max_sumexp(c, row, C, &m, &s);
  ce_grad_row(c, nd, row, elem_ptr(c, c->ft, out, base), m, s, t, valid, dl, count);
  loop_end(c, &R);
  return NULL;
}

/* Gradient clipping (torch.nn.utils.clip_grad_norm_): each gradient's sum of squares; the total's
 * coefficient min(1, max_norm / (sqrt(total) + 1e-6)); each gradient times it. */
static LLVMValueRef emit_sumsq(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef acc = cg_var(c, c->ft, fconst(c, 0));
  cg_loop L;
  loop_begin(c, &L, iconst(c, gr_shape_inner(&nd->in[0]->shape)));
  LLVMValueRef v = loadf(c, a[0], L.i);
  LLVMBuildStore(c->b, fadd(c, LLVMBuildLoad2(c->b, c->ft, acc, ""), fmul(c, v, v)), acc);
  loop_end(c, &L);
  storef(c, LLVMBuildLoad2(c->b, c->ft, acc, ""), a[1], iconst(c, 0));
  return NULL;
}

static LLVMValueRef emit_clip_coef(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef total = loadf(c, a[0], iconst(c, 0));
  LLVMValueRef norm = intrinsic(c, "llvm.sqrt", &total, 1);
  LLVMValueRef coef = fdiv(c, fconst(c, nd->a.max_norm), fadd(c, norm, fconst(c, 1e-6)));
  LLVMValueRef args[2] = {coef, fconst(c, 1)};
  storef(c, intrinsic(c, "llvm.minnum", args, 2), a[1], iconst(c, 0));
  return NULL;
}

static LLVMValueRef emit_scale(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef k = loadf(c, a[1], iconst(c, 0));
  cg_loop L;
  loop_begin(c, &L, iconst(c, gr_shape_inner(&nd->in[0]->shape)));
  storef(c, fmul(c, loadf(c, a[0], L.i), k), a[2], L.i);
  loop_end(c, &L);
  return NULL;
}

/* torch.optim.SGD: g += wd p; v = mu v + g; g = nesterov ? g + mu v : v; p -= lr g */
static LLVMValueRef emit_sgd_update(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  bool mom = nd->op == GR_OP_SGD_MOMENTUM_UPDATE;
  LLVMValueRef p = a[0], g = a[1], v = mom ? a[2] : a[0], scal = a[nd->n_in + 2];
  int64_t count = gr_shape_inner(&nd->in[0]->shape);
  LLVMValueRef *vals[4] = {&p, &g, &v, &scal};
  cg_par L; /* elements in parallel */
  par_enter(c, &L, iconst(c, count), vals, 4, 1, mom ? 0x8 : 0xC);
  LLVMValueRef lr = LLVMBuildLoad2(c->b, c->f32, elem_ptr(c, c->f32, scal, iconst(c, nd->a.lr_slot)), "lr");
  if (c->ft != c->f32) lr = LLVMBuildFPExt(c->b, lr, c->ft, "");
  par_loop(c, &L);
  LLVMValueRef pi = loadf(c, p, L.i), gi = loadf(c, g, L.i);
  if (nd->a.weight_decay != 0) gi = fadd(c, gi, fmul(c, fconst(c, nd->a.weight_decay), pi));
  if (mom) {
    LLVMValueRef vi = fadd(c, fmul(c, fconst(c, nd->a.momentum), loadf(c, v, L.i)), gi);
    storef(c, vi, v, L.i);
    gi = nd->a.nesterov ? fadd(c, gi, fmul(c, fconst(c, nd->a.momentum), vi)) : vi;
  }
  storef(c, fsub(c, pi, fmul(c, lr, gi)), p, L.i);
  par_end(c, &L);
  return NULL;
}

/* torch.optim.Adam / AdamW (see compiler/optimizer.c); the step-dependent factors are computed once
 * per call in double precision, as PyTorch computes them in Python floats. */
static LLVMValueRef emit_adam_update(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef p = a[0], g = a[1], m = a[2], v = a[3], scal = a[nd->n_in + 2];
  int64_t count = gr_shape_inner(&nd->in[0]->shape);
  LLVMValueRef *vals[5] = {&p, &g, &m, &v, &scal};
  cg_par L; /* elements in parallel; each part computes the step's factors itself, before its loop */
  par_enter(c, &L, iconst(c, count), vals, 5, 4, 0x10);
  LLVMTypeRef dt = LLVMDoubleTypeInContext(c->ctx);
  LLVMValueRef lr = LLVMBuildFPExt(c->b, LLVMBuildLoad2(c->b, c->f32, elem_ptr(c, c->f32, scal, iconst(c, nd->a.lr_slot)), ""), dt, "lr");
  LLVMValueRef t = LLVMBuildFPExt(c->b, LLVMBuildLoad2(c->b, c->f32, elem_ptr(c, c->f32, scal, iconst(c, nd->a.step_slot)), ""), dt, "t");
  LLVMValueRef one = LLVMConstReal(dt, 1.0);
  LLVMTypeRef powty = LLVMFunctionType(dt, (LLVMTypeRef[]){dt, dt}, 2, 0);
  LLVMValueRef powfn = LLVMGetNamedFunction(c->mod, "pow");
  if (!powfn) powfn = LLVMAddFunction(c->mod, "pow", powty);
  LLVMValueRef bc1 = LLVMBuildFSub(c->b, one, LLVMBuildCall2(c->b, powty, powfn, (LLVMValueRef[]){LLVMConstReal(dt, nd->a.beta1), t}, 2, ""), "");
  LLVMValueRef bc2 = LLVMBuildFSub(c->b, one, LLVMBuildCall2(c->b, powty, powfn, (LLVMValueRef[]){LLVMConstReal(dt, nd->a.beta2), t}, 2, ""), "");
  LLVMTypeRef sqty = LLVMFunctionType(dt, &dt, 1, 0);
  LLVMValueRef sqfn = LLVMGetNamedFunction(c->mod, "sqrt");
  if (!sqfn) sqfn = LLVMAddFunction(c->mod, "sqrt", sqty);
  LLVMValueRef step_size = LLVMBuildFPTrunc(c->b, LLVMBuildFDiv(c->b, lr, bc1, ""), c->ft, "");
  LLVMValueRef bc2_sqrt = LLVMBuildFPTrunc(c->b, LLVMBuildCall2(c->b, sqty, sqfn, &bc2, 1, ""), c->ft, "");
  LLVMValueRef decay = LLVMBuildFPTrunc(c->b, LLVMBuildFSub(c->b, one, LLVMBuildFMul(c->b, lr, LLVMConstReal(dt, nd->a.weight_decay), ""), ""), c->ft, "");
  double b1 = nd->a.beta1, b2 = nd->a.beta2;
  par_loop(c, &L);
  LLVMValueRef pi = loadf(c, p, L.i), gi = loadf(c, g, L.i);
  if (nd->a.weight_decay != 0) {
    if (nd->a.decoupled)
      pi = fmul(c, pi, decay);
    else
      gi = fadd(c, gi, fmul(c, fconst(c, nd->a.weight_decay), pi));
  }
  LLVMValueRef mi = fadd(c, fmul(c, fconst(c, b1), loadf(c, m, L.i)), fmul(c, fconst(c, 1 - b1), gi));
  LLVMValueRef vi = fadd(c, fmul(c, fconst(c, b2), loadf(c, v, L.i)), fmul(c, fconst(c, 1 - b2), fmul(c, gi, gi)));
  storef(c, mi, m, L.i);
  storef(c, vi, v, L.i);
  LLVMValueRef denom = fadd(c, fdiv(c, intrinsic(c, "llvm.sqrt", &vi, 1), bc2_sqrt), fconst(c, nd->a.eps));
  storef(c, fsub(c, pi, fmul(c, step_size, fdiv(c, mi, denom))), p, L.i);
  par_end(c, &L);
  return NULL;
}

/* ---- layernorm, embedding, mean, losses against float targets ---------------------------------- */

/* A sum over j < len of f(j), f built by `term` in the loop body (reassociated, so it vectorises). */
typedef LLVMValueRef (*term_fn)(gr_cg *c, LLVMValueRef j, LLVMValueRef *ctx);
static LLVMValueRef sum_over(gr_cg *c, int64_t len, term_fn term, LLVMValueRef *ctx) {
  cg_loop L;
  loop_begin(c, &L, iconst(c, len));
  LLVMValueRef acc = loop_phi(c, &L, c->ft, fconst(c, 0));
  loop_carry(&L, acc, fadd(c, acc, term(c, L.i, ctx)));
  loop_end(c, &L);
  return acc;
}
static LLVMValueRef term_x(gr_cg *c, LLVMValueRef j, LLVMValueRef *k) { return loadf(c, k[0], j); }
static LLVMValueRef term_sqdev(gr_cg *c, LLVMValueRef j, LLVMValueRef *k) {
  LLVMValueRef d = fsub(c, loadf(c, k[0], j), k[1]);
  return fmul(c, d, d);
}
/* dy gamma, and dy gamma xhat: k = {dy row, gamma, x row, mean, rstd} */
static LLVMValueRef term_dyg(gr_cg *c, LLVMValueRef j, LLVMValueRef *k) { return fmul(c, loadf(c, k[0], j), loadf(c, k[1], j)); }
static LLVMValueRef term_dyg_xhat(gr_cg *c, LLVMValueRef j, LLVMValueRef *k) {
  return fmul(c, term_dyg(c, j, k), fmul(c, fsub(c, loadf(c, k[2], j), k[3]), k[4]));
}

/* Mean and 1/sqrt(var + eps) (biased variance, two passes) of the D values at row. */
static void row_stats(gr_cg *c, LLVMValueRef row, int64_t D, double eps, LLVMValueRef *mean, LLVMValueRef *rstd) {
  *mean = fdiv(c, sum_over(c, D, term_x, (LLVMValueRef[]){row}), fconst(c, (double)D));
  LLVMValueRef var = fdiv(c, sum_over(c, D, term_sqdev, (LLVMValueRef[]){row, *mean}), fconst(c, (double)D));
  *rstd = rsqrt_eps(c, var, eps);
}

/* Rows of a layernorm node: N times the leading per-sample dimensions; D: the normalised ones. */
static LLVMValueRef ln_rows(gr_cg *c, const gr_node *nd, int64_t D, LLVMValueRef n) {
  return imul(c, n, iconst(c, gr_shape_inner(&nd->in[0]->shape) / D));
}

/* y = (x - mean) rstd gamma + beta per row of D values */
static LLVMValueRef emit_layernorm(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], gamma = a[1], beta = a[2], y = a[3], n = a[4];
  int64_t D = gr_shape_inner(&nd->in[1]->shape);
  cg_loop R, L;
  loop_begin(c, &R, ln_rows(c, nd, D, n));
  LLVMValueRef base = imul(c, R.i, iconst(c, D)), row = fptr(c, x, base), yrow = fptr(c, y, base), mean, rstd;
  row_stats(c, row, D, nd->a.bn_eps, &mean, &rstd);
  loop_begin(c, &L, iconst(c, D));
  LLVMValueRef v = fmul(c, fsub(c, loadf(c, row, L.i), mean), rstd);
  storef(c, fadd(c, fmul(c, v, loadf(c, gamma, L.i)), loadf(c, beta, L.i)), yrow, L.i);
  loop_end(c, &L);
  loop_end(c, &R);
  return NULL;
}

/* dx = rstd (g - sum(g)/D - xhat sum(g xhat)/D), g = dy gamma */
static LLVMValueRef emit_layernorm_grad_input(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], gamma = a[1], dy = a[2], dx = a[3], n = a[4];
  int64_t D = gr_shape_inner(&nd->in[1]->shape);
  cg_loop R, L;
  loop_begin(c, &R, ln_rows(c, nd, D, n));
  LLVMValueRef base = imul(c, R.i, iconst(c, D)), row = fptr(c, x, base), dyr = fptr(c, dy, base), dxr = fptr(c, dx, base);
  LLVMValueRef mean, rstd;
  row_stats(c, row, D, nd->a.bn_eps, &mean, &rstd);
  LLVMValueRef k[5] = {dyr, gamma, row, mean, rstd}, invD = fconst(c, 1.0 / (double)D);
  LLVMValueRef m1 = fmul(c, sum_over(c, D, term_dyg, k), invD), m2 = fmul(c, sum_over(c, D, term_dyg_xhat, k), invD);
  loop_begin(c, &L, iconst(c, D));
  LLVMValueRef xhat = fmul(c, fsub(c, loadf(c, row, L.i), mean), rstd);
  storef(c, fmul(c, rstd, fsub(c, fsub(c, term_dyg(c, L.i, k), m1), fmul(c, xhat, m2))), dxr, L.i);
  loop_end(c, &L);
  loop_end(c, &R);
  return NULL;
}

/* out[j] = sum over rows r of dy[r, j] (times xhat[r, j] if x is given: layernorm's dgamma), j over
 * the D values of the attributes' shape */
static void column_sums(gr_cg *c, const gr_node *nd, LLVMValueRef x, LLVMValueRef dy, LLVMValueRef out, LLVMValueRef n) {
  int64_t D = gr_shape_inner(&nd->a.shape);
  cg_loop R, L;
  loop_begin(c, &L, iconst(c, D));
  storef(c, fconst(c, 0), out, L.i);
  loop_end(c, &L);
  loop_begin(c, &R, ln_rows(c, nd, D, n));
  LLVMValueRef base = imul(c, R.i, iconst(c, D)), dyr = fptr(c, dy, base), row = NULL, mean = NULL, rstd = NULL;
  if (x) {
    row = fptr(c, x, base);
    row_stats(c, row, D, nd->a.bn_eps, &mean, &rstd);
  }
  loop_begin(c, &L, iconst(c, D));
  LLVMValueRef v = loadf(c, dyr, L.i);
  if (x) v = fmul(c, v, fmul(c, fsub(c, loadf(c, row, L.i), mean), rstd));
  storef(c, fadd(c, loadf(c, out, L.i), v), out, L.i);
  loop_end(c, &L);
  loop_end(c, &R);
}

static LLVMValueRef emit_layernorm_grad_gamma(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  return column_sums(c, nd, a[0], a[1], a[2], a[3]), NULL;
}
static LLVMValueRef emit_sum_rows(gr_cg *c, const gr_node *nd, LLVMValueRef *a) { return column_sums(c, nd, NULL, a[0], a[1], a[2]), NULL; }

/* The index at ids[i] and whether it names a row of a table of V rows: the data loader rejects
 * indices out of range, and the kernels check again, so a bad index never reads or writes outside
 * the table (it gives a zero row and no gradient). */
static LLVMValueRef load_index(gr_cg *c, LLVMValueRef ids, LLVMValueRef i, int64_t V, LLVMValueRef *valid) {
  LLVMValueRef id = LLVMBuildSExt(c->b, LLVMBuildLoad2(c->b, c->i32, elem_ptr(c, c->i32, ids, i), ""), c->i64, "");
  *valid = in_range(c, id, V);
  return id;
}

/* y[i, :] = table[ids[i], :] */
static LLVMValueRef emit_embedding(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef ids = a[0], table = a[1], y = a[2], n = a[3], valid;
  int64_t V = nd->in[1]->shape.dim[0], D = nd->in[1]->shape.dim[1];
  cg_loop E, L;
  loop_begin(c, &E, imul(c, n, iconst(c, gr_shape_inner(&nd->in[0]->shape))));
  LLVMValueRef id = load_index(c, ids, E.i, V, &valid);
  LLVMValueRef src = fptr(c, table, imul(c, LLVMBuildSelect(c->b, valid, id, iconst(c, 0), ""), iconst(c, D)));
  LLVMValueRef dst = fptr(c, y, imul(c, E.i, iconst(c, D)));
  loop_begin(c, &L, iconst(c, D));
  storef(c, LLVMBuildSelect(c->b, valid, loadf(c, src, L.i), fconst(c, 0), ""), dst, L.i);
  loop_end(c, &L);
  loop_end(c, &E);
  return NULL;
}

/* dtable = 0; dtable[ids[i], :] += dy[i, :] for every i (but the padding row) */
static LLVMValueRef emit_embedding_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef ids = a[0], dy = a[1], dt = a[2], n = a[3], valid;
  int64_t V = nd->a.shape.dim[0], D = nd->a.shape.dim[1];
  cg_loop E, L;
  loop_begin(c, &L, iconst(c, V * D));
  storef(c, fconst(c, 0), dt, L.i);
  loop_end(c, &L);
  loop_begin(c, &E, imul(c, n, iconst(c, gr_shape_inner(&nd->in[0]->shape))));
  LLVMValueRef id = load_index(c, ids, E.i, V, &valid);
  if (nd->a.has_pad) valid = LLVMBuildAnd(c->b, valid, LLVMBuildICmp(c->b, LLVMIntNE, id, iconst(c, nd->a.pad_idx), ""), "");
  LLVMBasicBlockRef join = cg_if_begin(c, valid);
  LLVMValueRef src = fptr(c, dy, imul(c, E.i, iconst(c, D))), dst = fptr(c, dt, imul(c, id, iconst(c, D)));
  loop_begin(c, &L, iconst(c, D));
  storef(c, fadd(c, loadf(c, dst, L.i), loadf(c, src, L.i)), dst, L.i);
  loop_end(c, &L);
  cg_if_end(c, join);
  loop_end(c, &E);
  return NULL;
}

/* Geometry of a mean along axis of x: rows before it (N included), its length T, values after it. */
static void mean_geometry(gr_cg *c, const gr_shape *x, int axis, LLVMValueRef n, LLVMValueRef *outer, int64_t *T, int64_t *inner) {
  *outer = outer_rows(c, x, axis, n);
  *T = x->dim[axis];
  *inner = 1;
  for (int i = axis + 1; i < x->rank; i++) *inner *= x->dim[i];
}

/* y[o, j] = sum over t of x[o, t, j] / T */
static LLVMValueRef emit_mean(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef x = a[0], y = a[1], outer;
  int64_t T, J;
  mean_geometry(c, &nd->in[0]->shape, nd->a.axis, a[2], &outer, &T, &J);
  cg_loop O, t, L;
  loop_begin(c, &O, outer);
  LLVMValueRef yrow = fptr(c, y, imul(c, O.i, iconst(c, J))), xrow = fptr(c, x, imul(c, O.i, iconst(c, T * J)));
  loop_begin(c, &L, iconst(c, J));
  storef(c, fconst(c, 0), yrow, L.i);
  loop_end(c, &L);
  loop_begin(c, &t, iconst(c, T));
  LLVMValueRef src = fptr(c, xrow, imul(c, t.i, iconst(c, J)));
  loop_begin(c, &L, iconst(c, J));
  storef(c, fadd(c, loadf(c, yrow, L.i), loadf(c, src, L.i)), yrow, L.i);
  loop_end(c, &L);
  loop_end(c, &t);
  loop_begin(c, &L, iconst(c, J));
  storef(c, fmul(c, loadf(c, yrow, L.i), fconst(c, 1.0 / (double)T)), yrow, L.i);
  loop_end(c, &L);
  loop_end(c, &O);
  return NULL;
}

/* dx[o, t, j] = dy[o, j] / T */
static LLVMValueRef emit_mean_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  LLVMValueRef dy = a[0], dx = a[1], outer;
  int64_t T, J;
  mean_geometry(c, &nd->a.shape, nd->a.axis, a[2], &outer, &T, &J);
  cg_loop O, t, L;
  loop_begin(c, &O, outer);
  LLVMValueRef dyrow = fptr(c, dy, imul(c, O.i, iconst(c, J))), dxrow = fptr(c, dx, imul(c, O.i, iconst(c, T * J)));
  loop_begin(c, &t, iconst(c, T));
  LLVMValueRef dst = fptr(c, dxrow, imul(c, t.i, iconst(c, J)));
  loop_begin(c, &L, iconst(c, J));
  storef(c, fmul(c, loadf(c, dyrow, L.i), fconst(c, 1.0 / (double)T)), dst, L.i);
  loop_end(c, &L);
  loop_end(c, &t);
  loop_end(c, &O);
  return NULL;
}

/* Per-element terms of the losses against float targets (x prediction, t target). */
static LLVMValueRef bce_term(gr_cg *c, LLVMValueRef x, LLVMValueRef t) { /* max(x, 0) - x t + log1p(e^-|x|) */
  LLVMValueRef ax = intrinsic(c, "llvm.fabs", &x, 1);
  LLVMValueRef pos = LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, x, fconst(c, 0), ""), x, fconst(c, 0), "");
  return fadd(c, fsub(c, pos, fmul(c, x, t)), libm(c, "log1p", fexp(c, fm(c, LLVMBuildFNeg(c->b, ax, "")))));
}
static LLVMValueRef mse_term(gr_cg *c, LLVMValueRef x, LLVMValueRef t) {
  LLVMValueRef d = fsub(c, x, t);
  return fmul(c, d, d);
}
static LLVMValueRef bce_grad_term(gr_cg *c, LLVMValueRef x, LLVMValueRef t) {
  return fsub(c, emit_sigmoid(c, NULL, &x), t);
}
static LLVMValueRef mse_grad_term(gr_cg *c, LLVMValueRef x, LLVMValueRef t) { return fmul(c, fconst(c, 2), fsub(c, x, t)); }

typedef LLVMValueRef (*pair_fn)(gr_cg *c, LLVMValueRef x, LLVMValueRef t);

/* loss = sum over the n * inner elements of term(x, t), divided by their count */
static void target_loss(gr_cg *c, const gr_node *nd, LLVMValueRef *a, pair_fn term) {
  LLVMValueRef x = a[0], t = a[1], out = a[2], n = a[3];
  LLVMValueRef M = imul(c, n, iconst(c, gr_shape_inner(&nd->in[0]->shape)));
  cg_loop L;
  loop_begin(c, &L, M);
  LLVMValueRef acc = loop_phi(c, &L, c->ft, fconst(c, 0));
  loop_carry(&L, acc, fadd(c, acc, term(c, loadf(c, x, L.i), loadf(c, t, L.i))));
  loop_end(c, &L);
  storef(c, fdiv(c, acc, LLVMBuildSIToFP(c->b, M, c->ft, "")), out, iconst(c, 0));
}

/* dx = dL / M * grad_term(x, t) */
static void target_loss_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a, pair_fn grad_term) {
  LLVMValueRef x = a[0], t = a[1], dl = a[2], dx = a[3], n = a[4];
  LLVMValueRef M = imul(c, n, iconst(c, gr_shape_inner(&nd->in[0]->shape)));
  LLVMValueRef scale = fdiv(c, loadf(c, dl, iconst(c, 0)), LLVMBuildSIToFP(c->b, M, c->ft, ""));
  cg_loop L;
  loop_begin(c, &L, M);
  storef(c, fmul(c, scale, grad_term(c, loadf(c, x, L.i), loadf(c, t, L.i))), dx, L.i);
  loop_end(c, &L);
}

static LLVMValueRef emit_bce_logits(gr_cg *c, const gr_node *nd, LLVMValueRef *a) { return target_loss(c, nd, a, bce_term), NULL; }
static LLVMValueRef emit_mse(gr_cg *c, const gr_node *nd, LLVMValueRef *a) { return target_loss(c, nd, a, mse_term), NULL; }
static LLVMValueRef emit_bce_logits_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) {
  return target_loss_grad(c, nd, a, bce_grad_term), NULL;
}
static LLVMValueRef emit_mse_grad(gr_cg *c, const gr_node *nd, LLVMValueRef *a) { return target_loss_grad(c, nd, a, mse_grad_term), NULL; }

static const emit_fn emitters[GR_OP_COUNT] = {
#define OP(id, name, arity, kclass, flags, shape, grad, emit) [GR_OP_##id] = emit,
#include "ir/ops.def"
#undef OP
};

/* ---- kernels and programs ---------------------------------------------------------------------- */

/* Which input of an epilogue's i-th node is the value coming down the chain (0 for siblings). */
static int chain_slot(const gr_node *const *chain, int i) {
  for (int j = 0; j < chain[i]->n_in; j++)
    if (chain[i]->in[j] == chain[i - 1]->out) return j;
  return 0;
}

/* The values a fused kernel reads or writes beyond its anchor's: an epilogue's operands besides the
 * value coming down the chain, or the siblings' outputs, in order. */
static int epi_operands(const gr_node *const *chain, int n, const gr_value **out) {
  int k = 0;
  if (gr_fuse_siblings(chain[0])) {
    for (int i = 1; i < n; i++) {
      out[k++] = chain[i]->out;
      for (int j = 0; j < chain[i]->n_in; j++)
        if (!anchor_reads(chain[0], chain[i]->in[j])) out[k++] = chain[i]->in[j];
    }
    return k;
  }
  const gr_value *v = chain[0]->out;
  for (int i = 1; i < n; i++) {
    for (int j = 0; j < chain[i]->n_in; j++)
      if (chain[i]->in[j] != v) out[k++] = chain[i]->in[j];
    v = chain[i]->out;
  }
  return k;
}

/* void k<id>(ptr in..., ptr out, i64 n, ptr scalars, ptr scratch, ptr epilogue operands...) for
 * chain[0] and the epilogue chain[1..n) fused into it (n = 1: none); out is the chain's last output. */
static LLVMValueRef kernel_function(gr_cg *c, const gr_node *const *chain, int n_chain) {
  const gr_node *nd = chain[0];
  const gr_value *opv[GR_FUSE_MAX_OPERANDS * GR_MAX_IN];
  int n_ops = epi_operands(chain, n_chain, opv);
  GR_ASSERT(n_ops <= GR_FUSE_MAX_OPERANDS);
  int np = nd->n_in + 4 + n_ops;
  LLVMTypeRef params[GR_MAX_IN + 4 + GR_FUSE_MAX_OPERANDS];
  for (int i = 0; i < np; i++) params[i] = c->ptr;
  params[nd->n_in + 1] = c->i64;
  char name[128];
  int len = snprintf(name, sizeof name, "k%d_%s", nd->id, gr_ops[nd->op].name);
  for (int i = 1; i < n_chain && len < (int)sizeof name; i++) len += snprintf(name + len, sizeof name - (size_t)len, "+%s", gr_ops[chain[i]->op].name);
  LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->voidt, params, (unsigned)np, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (int i = 0; i < np; i++)
    if (i <= nd->n_in || i == nd->n_in + 3) LLVMAddAttributeAtIndex(fn, (unsigned)i + 1, LLVMCreateEnumAttribute(c->ctx, noalias, 0));
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  LLVMValueRef args[GR_MAX_IN + 4 + GR_FUSE_MAX_OPERANDS];
  for (int i = 0; i < np; i++) args[i] = LLVMGetParam(fn, (unsigned)i);
  bool sib = gr_fuse_siblings(nd);
  cg_epi epi = {.nodes = chain + 1, .n = sib ? 0 : n_chain - 1, .anchor = nd, .sib = chain + 1, .n_sib = sib ? n_chain - 1 : 0, .n_ptr = n_ops};
  for (int i = 1; i < n_chain; i++) epi.slot[i - 1] = chain_slot(chain, i);
  for (int k = 0; k < n_ops; k++) epi.ptr[k] = args[nd->n_in + 4 + k];
  c->epi = n_chain > 1 ? &epi : NULL;
  const gr_op_info *info = &gr_ops[nd->op];
  if (info->kclass == GR_KC_CUSTOM) {
    if (info->flags & GR_OPF_UPD) args[nd->n_in] = NULL;
    emitters[nd->op](c, nd, args);
  } else {
    GR_ASSERT(info->kclass == GR_KC_ELEM);
    const gr_shape *os = &nd->out->shape;
    int64_t inner = gr_shape_inner(os);
    LLVMValueRef out = args[nd->n_in], n = args[nd->n_in + 1], *vp[GR_MAX_IN + 2];
    for (int k = 0; k < nd->n_in; k++) vp[k] = &args[k];
    vp[nd->n_in] = &out;
    vp[nd->n_in + 1] = &n;
    cg_par R; /* rows in parallel */
    cg_loop L;
    par_begin(c, &R, rows_of(c, os, n), vp, nd->n_in + 2, inner, 0);
    LLVMValueRef base = imul(c, R.i, iconst(c, inner));
    loop_begin(c, &L, iconst(c, inner));
    LLVMValueRef idx = iadd(c, base, L.i), vals[GR_MAX_IN];
    for (int k = 0; k < nd->n_in; k++) {
      bool bcast = gr_shape_has_batch(os) && !gr_shape_has_batch(&nd->in[k]->shape);
      vals[k] = loadf(c, args[k], bcast ? L.i : idx);
    }
    out_store(c, elementwise(c, nd, vals), out, idx, NULL);
    loop_end(c, &L);
    par_end(c, &R);
  }
  GR_CHECK(n_chain == 1 || epi.used, "kernel %s did not apply its fused epilogue", name);
  c->epi = NULL;
  LLVMBuildRetVoid(c->b);
  return fn;
}

/* Everything a kernel's code depends on: op, operand dtypes and shapes, and the attributes. */
static const char *kernel_key(gr_cg *c, const gr_node *nd) {
  char buf[1024], sb[96];
  int k = snprintf(buf, sizeof buf, "%s", gr_ops[nd->op].name);
  for (int i = 0; i < nd->n_in && k < (int)sizeof buf; i++)
    k += snprintf(buf + k, sizeof buf - (size_t)k, " %s%s", gr_dtype_name[nd->in[i]->dtype], gr_shape_str(&nd->in[i]->shape, sb, sizeof sb));
  if (nd->out && k < (int)sizeof buf)
    k += snprintf(buf + k, sizeof buf - (size_t)k, " -> %s%s", gr_dtype_name[nd->out->dtype], gr_shape_str(&nd->out->shape, sb, sizeof sb));
  const gr_attrs *a = &nd->a;
  if (k < (int)sizeof buf)
    snprintf(buf + k, sizeof buf - (size_t)k,
             " | %d %d %s %.9g %.9g %d %.17g %.17g %.17g %d %d %lld %lld %lld %lld %lld %lld %lld %lld %lld %d %lld %lld %d %.17g %.17g %.17g %.17g %d %d %lld %d",
             a->trans_a, a->trans_b, gr_shape_str(&a->shape, sb, sizeof sb), a->momentum, a->weight_decay, a->nesterov, a->beta1,
             a->beta2, a->eps, a->decoupled, a->lr_slot, (long long)a->kernel[0], (long long)a->kernel[1], (long long)a->stride[0],
             (long long)a->stride[1], (long long)a->pad[0], (long long)a->pad[1], (long long)a->dilation[0],
             (long long)a->dilation[1], (long long)a->groups, a->axis, (long long)a->start, (long long)a->len, a->training,
             a->bn_eps, a->bn_momentum, a->smoothing, a->drop_p, a->salt, a->has_pad, (long long)a->pad_idx, a->step_slot);
  if (a->max_norm != 0) snprintf(buf + strlen(buf), sizeof buf - strlen(buf), " %.17g", a->max_norm);
  return gr_strdup(c->g->arena, buf);
}

/* The kernel of a node and its fused epilogue: an existing one with the same key, or a new one. */
static LLVMValueRef shared_kernel(gr_cg *c, const gr_node *const *chain, int n_chain) {
  const char *key = kernel_key(c, chain[0]);
  for (int i = 1; i < n_chain; i++) { /* each epilogue node, and which input the chain feeds */
    int slot = chain_slot(chain, i);
    const char *more = kernel_key(c, chain[i]);
    size_t len = strlen(key) + strlen(more) + 8;
    char *joined = gr_alloc(c->g->arena, len);
    snprintf(joined, len, "%s ; %d %s", key, slot, more);
    key = joined;
  }
  for (int i = 0; i < c->n_kernels; i++)
    if (!strcmp(c->kernels[i].key, key)) return c->kernels[i].fn;
  /* LLVM unrolls none of the forward batchnorm's loops (statistics, normalisation, fused epilogues):
   * on ResNet-18 64x64 trained whole that takes a fifth off LLVM's time (its CPU time 6.9-7.9 s to
   * 5.1-6.3 s, the machine code 294 to 256 KB; the cold first step 4.8-5.3 s to 3.2-4.0 s on 2 cores)
   * and the steps run as fast (docs/benchmarks.md). The other kernels' unrolling pays: without any,
   * the same steps ran 7-12% slower. Not the backward batchnorm yet: with batchnorm_grad_input not
   * unrolled, ResNet-18's loss moved from 7e-6 to 2e-3 of PyTorch's in 9 steps (torch_parity), which
   * is not understood. */
  c->no_unroll = chain[0]->op == GR_OP_BATCHNORM;
  LLVMValueRef fn = kernel_function(c, chain, n_chain);
  c->no_unroll = false;
  gr_grow(c->g->arena, (void **)&c->kernels, &c->cap_kernels, c->n_kernels + 1, sizeof *c->kernels);
  c->kernels[c->n_kernels++] = (kernel_entry){key, fn};
  return fn;
}

static LLVMValueRef value_ptr(gr_cg *c, const gr_program *p, const gr_value *v, LLVMValueRef slab, LLVMValueRef arena) {
  const gr_value *r = gr_storage_root(v);
  int64_t off;
  LLVMValueRef base;
  if (r->role == GR_ROLE_PARAM || r->role == GR_ROLE_STATE) {
    GR_CHECK(r->slab_offset >= 0, "value %%%d has no slab offset", r->id);
    off = r->slab_offset;
    base = slab;
  } else {
    GR_CHECK(p->offsets[r->id] >= 0, "value %%%d has no arena offset in program %s", r->id, p->name);
    off = p->offsets[r->id];
    base = arena;
  }
  LLVMValueRef idx = iconst(c, off);
  return LLVMBuildInBoundsGEP2(c->b, LLVMInt8TypeInContext(c->ctx), base, &idx, 1, "");
}

static LLVMValueRef gemm_dim(gr_cg *c, int64_t d, LLVMValueRef n) {
  return d == GR_BATCH ? LLVMBuildTrunc(c->b, n, c->i32, "") : LLVMConstInt(c->i32, (unsigned long long)d, 0);
}

/* C[M, N] = op(A) op(B), row-major, through cblas_sgemm / cblas_dgemm. */
static void emit_gemm(gr_cg *c, const gr_node *nd, LLVMValueRef A, LLVMValueRef B, LLVMValueRef C, LLVMValueRef n) {
  const gr_shape *as = &nd->in[0]->shape, *bs = &nd->in[1]->shape, *cs = &nd->out->shape;
  int64_t K = as->dim[nd->a.trans_a ? 0 : 1];
  call_gemm(c, nd->a.trans_a, nd->a.trans_b, gemm_dim(c, cs->dim[0], n), gemm_dim(c, cs->dim[1], n), gemm_dim(c, K, n), A,
            i32c(c, as->dim[1]), B, i32c(c, bs->dim[1]), fconst(c, 0.0), C, i32c(c, cs->dim[1]));
}

static void program_function(gr_cg *c, const gr_program *p) {
  LLVMTypeRef params[4] = {c->ptr, c->ptr, c->i64, c->ptr};
  LLVMValueRef fn = LLVMAddFunction(c->mod, p->name, LLVMFunctionType(c->voidt, params, 4, 0));
  /* kernels first (each positions the builder in its own function) */
  LLVMValueRef *kern = gr_alloc(c->g->arena, sizeof(LLVMValueRef) * (size_t)(p->n_nodes + 1));
  for (int i = 0; i < p->n_nodes; i++) {
    gr_kclass kc = gr_ops[p->nodes[i]->op].kclass;
    int len = p->chain ? p->chain[p->nodes[i]->id] : 0; /* the fused epilogue: the nodes after it */
    if (kc == GR_KC_ELEM || kc == GR_KC_CUSTOM) kern[i] = shared_kernel(c, (const gr_node *const *)p->nodes + i, len + 1);
    i += len;
  }
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  LLVMValueRef slab = LLVMGetParam(fn, 0), arena = LLVMGetParam(fn, 1), n = LLVMGetParam(fn, 2), scal = LLVMGetParam(fn, 3);
  for (int i = 0; i < p->n_nodes; i++) {
    const gr_node *nd = p->nodes[i];
    gr_kclass kc = gr_ops[nd->op].kclass;
    if (kc == GR_KC_NONE || kc == GR_KC_VIEW) continue;
    int len = p->chain ? p->chain[nd->id] : 0;
    const gr_value *out = len && !gr_fuse_siblings(nd) ? p->nodes[i + len]->out : nd->out, *opv[GR_FUSE_MAX_OPERANDS * GR_MAX_IN];
    int n_ops = len ? epi_operands((const gr_node *const *)p->nodes + i, len + 1, opv) : 0;
    LLVMValueRef args[GR_MAX_IN + 4 + GR_FUSE_MAX_OPERANDS];
    for (int k = 0; k < nd->n_in; k++) args[k] = value_ptr(c, p, nd->in[k], slab, arena);
    args[nd->n_in] = out ? value_ptr(c, p, out, slab, arena) : LLVMConstPointerNull(c->ptr);
    for (int k = 0; k < n_ops; k++) args[nd->n_in + 4 + k] = value_ptr(c, p, opv[k], slab, arena);
    if (kc == GR_KC_GEMM) {
      emit_gemm(c, nd, args[0], args[1], args[2], n);
      continue;
    }
    args[nd->n_in + 1] = n;
    args[nd->n_in + 2] = scal;
    int64_t so = p->scratch[nd->id];
    LLVMValueRef soff = iconst(c, so);
    args[nd->n_in + 3] = so >= 0 ? LLVMBuildInBoundsGEP2(c->b, LLVMInt8TypeInContext(c->ctx), arena, &soff, 1, "") : LLVMConstPointerNull(c->ptr);
    LLVMBuildCall2(c->b, LLVMGlobalGetValueType(kern[i]), kern[i], args, (unsigned)(nd->n_in + 4 + n_ops), "");
    i += len;
  }
  LLVMBuildRetVoid(c->b);
}

LLVMModuleRef gr_codegen_module(LLVMContextRef ctx, const gr_graph *g, const gr_program *progs, int n_progs) {
  gr_cg c = {.ctx = ctx, .g = g};
  c.mod = LLVMModuleCreateWithNameInContext("graft", ctx);
  c.b = LLVMCreateBuilderInContext(ctx);
  c.f32 = LLVMFloatTypeInContext(ctx);
  c.ft = g->fdtype == GR_F64 ? LLVMDoubleTypeInContext(ctx) : c.f32;
  c.i64 = LLVMInt64TypeInContext(ctx);
  c.i32 = LLVMInt32TypeInContext(ctx);
  c.ptr = LLVMPointerTypeInContext(ctx, 0);
  c.voidt = LLVMVoidTypeInContext(ctx);
  for (int i = 0; i < n_progs; i++) program_function(&c, &progs[i]);
  LLVMDisposeBuilder(c.b);
  return c.mod;
}

const gr_extern_sym gr_codegen_externs[] = {
    {"gr_sgemm", (void *)gr_sgemm}, {"gr_sgemm_cb", (void *)gr_sgemm_cb}, {"gr_dgemm_cb", (void *)gr_dgemm_cb},
    {"gr_parallel_for", (void *)gr_parallel_for}, {"cblas_dgemm", (void *)cblas_dgemm},
    {"expf", (void *)expf},   {"exp", (void *)exp},   {"logf", (void *)logf},     {"log", (void *)log},
    {"expm1f", (void *)expm1f}, {"expm1", (void *)expm1}, {"pow", (void *)pow}, {"sqrt", (void *)sqrt},
    {"sqrtf", (void *)sqrtf}, {"erff", (void *)erff}, {"erf", (void *)erf}, {"log1pf", (void *)log1pf}, {"log1p", (void *)log1p},
    {"memset", (void *)memset}, {"memcpy", (void *)memcpy}, {"memmove", (void *)memmove},
    {NULL, NULL},
};
