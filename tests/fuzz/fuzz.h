/* fuzz.h — shared by the fuzz harnesses (tests/fuzz/fuzz_*.c). Each harness defines
 * LLVMFuzzerTestOneInput; built with clang's -fsanitize=fuzzer it is a libFuzzer target (make fuzz),
 * otherwise fuzz_main.c gives it a main that replays files (the ctest fuzz_replay_* runs the seed
 * corpora and every regression file under tests/fuzz/regressions/ through it). graft's readers take
 * paths, so an input is written to a file first: one per process, in $TMPDIR (or /tmp). Diagnostics
 * go to a sink that drops them: the harness looks for crashes, hangs, leaks and sanitizer reports,
 * not for messages. */
#ifndef GRAFT_FUZZ_H
#define GRAFT_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ir/diag.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A path for this process's input file `name` (the same on every call). */
static inline const char *fuzz_path(const char *name) {
  static char dir[256];
  static char path[4][512];
  static int k;
  if (!dir[0]) {
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/graft-fuzz-%d", t && *t ? t : "/tmp", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    if (system(cmd) != 0) abort();
  }
  k = (k + 1) % 4;
  snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
  return path[k];
}

static inline void fuzz_write(const char *path, const void *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) abort();
}

static void fuzz_drop(void *user, gr_diag_kind kind, gr_loc loc, const char *msg) { (void)user, (void)kind, (void)loc, (void)msg; }

static inline void fuzz_diag(gr_diag *d) {
  gr_diag_init(d);
  d->sink = fuzz_drop;
}

/* The input as this process's file `name`, and a diagnostics channel that drops everything. */
static inline const char *fuzz_input(const uint8_t *data, size_t size, const char *name, gr_diag *d) {
  const char *path = fuzz_path(name);
  fuzz_write(path, data, size);
  fuzz_diag(d);
  return path;
}

/* Reads every byte a reader handed out (the sanitizers check that it may). */
static inline void fuzz_touch(const uint8_t *p, int64_t n) {
  volatile uint64_t sum = 0;
  for (int64_t k = 0; k < n; k++) sum += p[k];
}
#endif
