/* metrics.c — the metrics contract: one JSON object per line, flushed per record so that a crashed
 * or interrupted run keeps what it logged. Training records: split "train", epoch, step, loss,
 * samples_per_s (and lr, accuracy); evaluation records: split "test"/"val", epoch, step, loss, accuracy. */
#include "runtime/runtime.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct gr_metrics {
  FILE *f;
};

gr_metrics *gr_metrics_open(const char *path, bool append, gr_diag *d) {
  FILE *f = fopen(path, append ? "a" : "w");
  if (!f) {
    gr_error(d, gr_loc_file(path), "cannot write metrics: %s", strerror(errno));
    return NULL;
  }
  gr_metrics *m = calloc(1, sizeof *m);
  GR_CHECK(m != NULL, "out of memory");
  m->f = f;
  return m;
}

void gr_metrics_close(gr_metrics *m) {
  if (!m) return;
  fclose(m->f);
  free(m);
}

void gr_metrics_record(gr_metrics *m, const char *split, ...) {
  if (!m) return;
  va_list ap;
  va_start(ap, split);
  fprintf(m->f, "{\"split\": \"%s\"", split);
  for (const char *k; (k = va_arg(ap, const char *));) {
    double v = va_arg(ap, double);
    size_t len = strlen(k);
    if (len && k[len - 1] == '#')
      fprintf(m->f, ", \"%.*s\": %lld", (int)len - 1, k, (long long)v);
    else if (isfinite(v))
      fprintf(m->f, ", \"%s\": %.8g", k, v);
    else
      fprintf(m->f, ", \"%s\": null", k); /* JSON has no NaN */
  }
  fputs("}\n", m->f);
  fflush(m->f);
  va_end(ap);
}
