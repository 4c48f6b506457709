/* diag.c — formatting and printing of user diagnostics (gcc style, with the source line and a caret)
 * and of internal errors. See diag.h for the stance. */
#include "ir/diag.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct gr_srcfile {
  gr_srcfile *next;
  char *name;
  char *text;
  size_t len;
};

void gr_diag_init(gr_diag *d) {
  memset(d, 0, sizeof *d);
  d->color = isatty(2) && getenv("NO_COLOR") == NULL;
}

void gr_diag_free(gr_diag *d) {
  for (gr_srcfile *f = d->files, *n; f; f = n) {
    n = f->next;
    free(f->name);
    free(f->text);
    free(f);
  }
  d->files = NULL;
}

void gr_diag_add_source(gr_diag *d, const char *file, const char *text, size_t len) {
  gr_srcfile *f = calloc(1, sizeof *f);
  GR_CHECK(f != NULL, "out of memory");
  f->name = strdup(file);
  f->text = malloc(len + 1);
  GR_CHECK(f->name && f->text, "out of memory");
  memcpy(f->text, text, len);
  f->text[len] = 0;
  f->len = len;
  f->next = d->files;
  d->files = f;
}

static const char *const kind_name[GR_DIAG_KIND_COUNT] = {"error", "warning", "note"};
static const char *const kind_color[GR_DIAG_KIND_COUNT] = {"\033[1;31m", "\033[1;35m", "\033[1;36m"};

int gr_diag_format(char *buf, size_t n, gr_diag_kind kind, gr_loc loc, const char *msg) {
  if (!loc.file) return snprintf(buf, n, "graft: %s: %s", kind_name[kind], msg);
  if (loc.line <= 0) return snprintf(buf, n, "%s: %s: %s", loc.file, kind_name[kind], msg);
  return snprintf(buf, n, "%s:%d:%d: %s: %s", loc.file, loc.line, loc.col, kind_name[kind], msg);
}

/* Prints source line `loc.line` of a registered file with a caret under `loc.col`. */
static void quote_source(gr_diag *d, FILE *out, gr_loc loc) {
  if (!loc.file || loc.line <= 0) return;
  const gr_srcfile *f = d->files;
  while (f && strcmp(f->name, loc.file) != 0) f = f->next;
  if (!f) return;
  const char *p = f->text, *end = f->text + f->len;
  for (int l = 1; l < loc.line && p < end; l++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return;
    p = nl + 1;
  }
  const char *e = p;
  while (e < end && *e != '\n' && *e != '\r') e++;
  int width = (int)(e - p);
  fprintf(out, " %4d | ", loc.line);
  for (const char *q = p; q < e; q++) /* control bytes would garble the terminal */
    fputc((unsigned char)*q < 0x20 && *q != '\t' ? '?' : *q == 0x7f ? '?' : *q, out);
  fputs("\n      | ", out);
  int col = loc.col < 1 ? 1 : loc.col;
  for (int i = 1; i < col && i <= width; i++) fputc(p[i - 1] == '\t' ? '\t' : ' ', out);
  if (d->color) fputs("\033[1;32m", out);
  fputc('^', out);
  for (int i = 1; i < loc.len && col + i <= width; i++) fputc('~', out);
  if (d->color) fputs("\033[0m", out);
  fputc('\n', out);
}

static void report(gr_diag *d, gr_diag_kind kind, gr_loc loc, const char *fmt, va_list ap) {
  char msg[2048];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (kind == GR_DIAG_ERROR) d->n_errors++;
  if (kind == GR_DIAG_WARNING) d->n_warnings++;
  if (kind != GR_DIAG_NOTE) d->muting = kind == GR_DIAG_WARNING && d->mute_warnings;
  if (d->muting) return;
  if (d->sink) {
    d->sink(d->user, kind, loc, msg);
    return;
  }
  FILE *out = d->out ? d->out : stderr;
  char head[2300];
  gr_diag_format(head, sizeof head, kind, loc, msg);
  if (d->color) {
    /* bold location, coloured severity, as gcc does */
    size_t pre = strlen(head) - strlen(msg) - strlen(kind_name[kind]) - 2;
    fprintf(out, "\033[1m%.*s\033[0m%s%s:\033[0m %s\n", (int)pre, head, kind_color[kind], kind_name[kind], msg);
  } else {
    fprintf(out, "%s\n", head);
  }
  quote_source(d, out, loc);
}

#define DEFINE_REPORTER(fn, kind)                    \
  void fn(gr_diag *d, gr_loc loc, const char *fmt, ...) { \
    va_list ap;                                      \
    va_start(ap, fmt);                               \
    report(d, kind, loc, fmt, ap);                   \
    va_end(ap);                                      \
  }
DEFINE_REPORTER(gr_error, GR_DIAG_ERROR)
DEFINE_REPORTER(gr_warning, GR_DIAG_WARNING)
DEFINE_REPORTER(gr_note, GR_DIAG_NOTE)

int gr_edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return 1 << 20;
  int row[65];
  for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    int diag = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int up = row[j];
      int best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

const char *gr_suggest(const char *word, const char *const *candidates) {
  const char *best = NULL;
  int best_d = 1 << 20;
  size_t wl = strlen(word);
  for (const char *const *c = candidates; *c; c++) {
    int dist = gr_edit_distance(word, *c);
    if (dist < best_d) {
      best_d = dist;
      best = *c;
    }
  }
  /* close enough: at most a third of the word, and at least one edit allowed */
  int limit = (int)(wl / 3) > 1 ? (int)(wl / 3) : 1;
  return best_d <= limit + (wl > 8) ? best : NULL;
}

void gr_internal_error(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s:%d: internal error: ", file, line);
  vfprintf(stderr, fmt, ap);
  fputs("\n(this is a bug in graft)\n", stderr);
  va_end(ap);
  abort();
}
