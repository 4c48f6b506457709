/* diag.h — graft's two error channels.
 *
 * User diagnostics: `file:line:col: error: message`, then the source line and a caret, as gcc prints
 * them. Every IR node carries the gr_loc of the YAML node it came from, so errors found late (shapes)
 * still point at the line the user wrote. Binary inputs have no lines: their locations carry the file
 * only and the message names the byte offset. Library code reports and returns a status; it never exits.
 *
 * Internal invariants: GR_ASSERT / GR_CHECK print __FILE__:__LINE__ and abort: a failed one is a graft bug. */
#ifndef GRAFT_DIAG_H
#define GRAFT_DIAG_H
#include <stdbool.h>
#include <stdio.h>

typedef struct gr_loc {
  const char *file; /* NULL: no location */
  int line, col;    /* 1-based; line 0: whole file (binary inputs) */
  int len;          /* characters to underline after the caret; 0 or 1: caret only */
} gr_loc;

typedef enum { GR_DIAG_ERROR, GR_DIAG_WARNING, GR_DIAG_NOTE, GR_DIAG_KIND_COUNT } gr_diag_kind;

/* Receives each diagnostic once it is formatted (message without location or severity). */
typedef void (*gr_diag_sink)(void *user, gr_diag_kind kind, gr_loc loc, const char *msg);

typedef struct gr_srcfile gr_srcfile;
typedef struct gr_diag {
  int n_errors, n_warnings;
  gr_diag_sink sink; /* NULL: print to `out` (stderr if NULL) with source line and caret */
  void *user;
  FILE *out;
  int color;         /* 1: ANSI colours in the default printer */
  bool mute_warnings; /* count warnings (and their notes) but do not report them: a second compile of the same files */
  bool muting;        /* the last warning was muted: so are the notes that follow it */
  gr_srcfile *files; /* registered sources, for quoting lines */
} gr_diag;

void gr_diag_init(gr_diag *d);
void gr_diag_free(gr_diag *d);
/* Keeps a copy of a source text so that diagnostics can quote its lines. */
void gr_diag_add_source(gr_diag *d, const char *file, const char *text, size_t len);

void gr_error(gr_diag *d, gr_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void gr_warning(gr_diag *d, gr_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void gr_note(gr_diag *d, gr_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Formats a diagnostic the way the default printer does, without the source quote. */
int gr_diag_format(char *buf, size_t n, gr_diag_kind kind, gr_loc loc, const char *msg);

/* A location for a whole file (binary inputs, missing files). */
static inline gr_loc gr_loc_file(const char *file) { return (gr_loc){file, 0, 0, 0}; }

/* Edit distance, for "did you mean" suggestions. */
int gr_edit_distance(const char *a, const char *b);
/* Returns the candidate closest to `word` (NULL-terminated list), or NULL if none is close. */
const char *gr_suggest(const char *word, const char *const *candidates);

void gr_internal_error(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
#define GR_CHECK(cond, ...) \
  do { if (!(cond)) gr_internal_error(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define GR_ASSERT(cond) GR_CHECK(cond, "assertion failed: %s", #cond)

#endif
