/* diag_capture.h — for unit tests: a diagnostics sink that records the last diagnostic (and how
 * many there were), so a test can assert on the message and the file it names. Header-only; each
 * test program includes it once. */
#ifndef GRAFT_TEST_DIAG_CAPTURE_H
#define GRAFT_TEST_DIAG_CAPTURE_H
#include <stdio.h>
#include <string.h>
#include "ir/diag.h"

typedef struct captured {
  int count;
  gr_diag_kind kind;
  char file[512];
  char msg[2048];
} captured;

static void capture_sink(void *user, gr_diag_kind kind, gr_loc loc, const char *msg) {
  captured *c = user;
  c->count++;
  c->kind = kind;
  snprintf(c->file, sizeof c->file, "%s", loc.file ? loc.file : "(null)");
  snprintf(c->msg, sizeof c->msg, "%s", msg);
}

/* Initialises d so that everything it reports lands in c. */
static void diag_capture(gr_diag *d, captured *c) {
  gr_diag_init(d);
  memset(c, 0, sizeof *c);
  d->sink = capture_sink;
  d->user = c;
}

#endif
