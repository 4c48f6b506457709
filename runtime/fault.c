/* fault.c — crash injection for the tests of checkpointing and resumption: with the environment
 * variable GRAFT_FAULT=POINT:N, the process kills itself with SIGKILL (no handlers, no buffers
 * flushed, exactly as a power cut or the OOM killer would end it) the N-th time it passes the named
 * point. Points: "step" (after a training step's kernels ran, before anything about the step is
 * recorded), "before_step" (just before a training step's kernels run: benchmarks time start-up with
 * it) and "rename" (an atomic file write, its temporary file complete and synced, before it
 * replaces the target). Unset, a point costs a string comparison. */
#include "runtime/runtime.h"
#include <signal.h>
#include <stdlib.h>
#include <string.h>

void gr_fault(const char *point) {
  static int state; /* 0: not read yet, 1: armed, 2: off */
  static char name[32];
  static long at, seen;
  if (state == 0) {
    const char *v = getenv("GRAFT_FAULT"), *colon = v ? strchr(v, ':') : NULL;
    state = 2;
    if (colon && (size_t)(colon - v) < sizeof name) {
      memcpy(name, v, (size_t)(colon - v));
      name[colon - v] = 0;
      at = strtol(colon + 1, NULL, 10);
      state = at > 0 ? 1 : 2;
    }
  }
  if (state == 1 && !strcmp(point, name) && ++seen == at) raise(SIGKILL);
}
