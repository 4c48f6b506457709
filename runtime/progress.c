/* progress.c — what a long run shows: on a terminal one live line, redrawn at most 10 times a second
 * (epoch, step, loss, throughput, ETA); into a file or pipe, plain lines at the caller's pace. */
#include "runtime/runtime.h"
#include <time.h>
#include <unistd.h>

double gr_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void gr_progress_init(gr_progress *p, FILE *out) {
  p->out = out;
  p->tty = isatty(fileno(out));
  p->last_draw = 0;
  p->width = 0;
}

static void fmt_eta(char *buf, size_t n, double s) {
  if (!(s >= 0) || s > 1e7) {
    snprintf(buf, n, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void gr_progress_step(gr_progress *p, int64_t epoch, int64_t epochs, int64_t step, int64_t steps, double loss,
                      double samples_per_s, double eta_s, bool force) {
  double now = gr_now();
  if (p->tty && !force && now - p->last_draw < 0.1) return;
  p->last_draw = now;
  char eta[32];
  fmt_eta(eta, sizeof eta, eta_s);
  if (p->tty) {
    char bar[21];
    int fill = steps > 0 ? (int)(20 * step / steps) : 0;
    for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
    bar[20] = 0;
    int w = fprintf(p->out, "\repoch %lld/%lld [%s] %lld/%lld  loss %.4f  %.0f samples/s  ETA %s ", (long long)epoch,
                    (long long)epochs, bar, (long long)step, (long long)steps, loss, samples_per_s, eta);
    for (int i = w; i < p->width; i++) fputc(' ', p->out);
    p->width = w;
  } else {
    fprintf(p->out, "epoch %lld/%lld  step %lld/%lld  loss %.4f  %.0f samples/s  eta %s\n", (long long)epoch,
            (long long)epochs, (long long)step, (long long)steps, loss, samples_per_s, eta);
  }
  fflush(p->out);
}

void gr_progress_clear(gr_progress *p) {
  if (!p->tty || !p->width) return;
  fprintf(p->out, "\r%*s\r", p->width, "");
  p->width = 0;
  fflush(p->out);
}
