/* artifact.h — a compiled plan's description as bytes: what `graft compile` puts into the library it
 * generates beside the machine code, and what graft_open_artifact reads back into the runtime's
 * structures (gr_run, gr_rt_model) without LLVM or the YAML frontends.
 *
 * Layout: "GRAFTDSC", a format version, then the model's name, the CPU and feature string it was
 * compiled for, the run (seed, order, learning rate and schedule), and per phase its epochs, learning
 * rate factor and model: every field of gr_rt_model and its parameters, states and programs. A
 * program's step function is an index into the artifact's table of step functions:
 * gr_artifact_step(phase, k), k 0..3 for train, eval, features, train_cached. Integers are
 * little-endian and fixed-width; the reader checks every length against the bytes left. */
#ifndef GRAFT_ARTIFACT_H
#define GRAFT_ARTIFACT_H
#include "ir/arena.h"
#include "runtime/runtime.h"

enum { GR_ARTIFACT_MAGIC = 0x54465247 /* "GRFT" */, GR_ARTIFACT_ABI = 1, GR_ARTIFACT_DESC_VERSION = 1 };

static inline int gr_artifact_step(int phase, int k) { return phase * 4 + k; }

/* The programs of a model, in step-table order. */
static inline const gr_rt_program *gr_artifact_program(const gr_rt_model *m, int k) {
  return k == 0 ? &m->train : k == 1 ? &m->eval : k == 2 ? &m->features : &m->train_cached;
}

typedef struct gr_artifact_info {
  const char *name, *cpu, *features; /* what it was compiled for */
} gr_artifact_info;

/* The description of run (malloc'd, *size bytes). */
uint8_t *gr_artifact_encode(const gr_run *run, const gr_artifact_info *info, size_t *size);
/* Reads a description into run and info (allocated in a), its step functions taken from steps[0 ..
 * n_steps); false after reporting what is wrong with it. */
bool gr_artifact_decode(const uint8_t *desc, size_t size, gr_step_fn const *steps, uint64_t n_steps, gr_arena *a, gr_run *run,
                        gr_artifact_info *info, gr_diag *d);

#endif
