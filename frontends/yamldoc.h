/* yamldoc.h — a loaded YAML file plus the schema helpers every frontend parser uses.
 *
 * The file is parsed whole into libyaml's document tree, which keeps a mark (line, column) on every
 * node. Parsers then walk it with the helpers below, which report gcc-style diagnostics: unknown keys
 * (with "did you mean"), duplicate keys, wrong types, out-of-range values and missing required keys.
 * A helper that reports returns false; parsers keep going to report more than one error per run. */
#ifndef GRAFT_YAMLDOC_H
#define GRAFT_YAMLDOC_H
#include <stdbool.h>
#include <stdint.h>
#include <yaml.h>
#include "ir/arena.h"
#include "ir/diag.h"

typedef yaml_node_t gr_ynode;

typedef struct gr_ydoc {
  const char *path;
  gr_diag *diag;
  gr_arena *arena;
  yaml_document_t doc;
  bool loaded;
  /* Optional: maps a value node to the node it stands for (the model frontend's block parameters:
   * a plain scalar `$name` stands for the argument). Applied by gr_yget and gr_ylist_at. */
  gr_ynode *(*subst)(void *ctx, gr_ynode *n);
  void *subst_ctx;
} gr_ydoc;

/* Reads and parses `path`; registers its text with the diagnostics. false after reporting. `from`
 * is where another file named this one (its open errors are reported there), or empty. */
bool gr_ydoc_load(gr_ydoc *y, const char *path, gr_loc from, gr_diag *d, gr_arena *a);
void gr_ydoc_free(gr_ydoc *y);
gr_ynode *gr_yroot(gr_ydoc *y);

gr_loc gr_yloc(const gr_ydoc *y, const gr_ynode *n);
/* "a mapping", "a list", "'abc'" — for messages. */
const char *gr_ydescribe(gr_ydoc *y, const gr_ynode *n);

/* Mappings. gr_ymap_check reports non-mappings, duplicate keys, merge keys and keys not in `allowed`
 * (NULL-terminated; NULL itself: any key), naming `what` ("the plan", "optimizer"). */
bool gr_ymap_check(gr_ydoc *y, gr_ynode *map, const char *what, const char *const *allowed);
/* The same, where `elsewhere` (NULL-terminated pairs: key, section) names keys that belong in a
 * section of this mapping, so that a misplaced key is reported as "belongs under 'section'". */
bool gr_ymap_check_hinted(gr_ydoc *y, gr_ynode *map, const char *what, const char *const *allowed, const char *const *elsewhere);
gr_ynode *gr_yget(gr_ydoc *y, gr_ynode *map, const char *key);                      /* NULL if absent */
gr_ynode *gr_yreq(gr_ydoc *y, gr_ynode *map, const char *key, const char *what);    /* reports if absent */
gr_loc gr_ykey_loc(gr_ydoc *y, gr_ynode *map, const char *key);                     /* the key's location */

/* Lists. */
int gr_ylist_len(const gr_ynode *n);
gr_ynode *gr_ylist_at(gr_ydoc *y, gr_ynode *n, int i);

/* Scalars; each reports "expected ..., got ..." at the value. */
bool gr_ystr(gr_ydoc *y, gr_ynode *n, const char *what, const char **out);
bool gr_yint(gr_ydoc *y, gr_ynode *n, const char *what, int64_t min, int64_t max, int64_t *out);
bool gr_yfloat(gr_ydoc *y, gr_ynode *n, const char *what, double min, double max, double *out);
bool gr_ybool(gr_ydoc *y, gr_ynode *n, const char *what, bool *out);
/* A scalar that must be one of `choices` (NULL-terminated); *out is its index. */
bool gr_yenum(gr_ydoc *y, gr_ynode *n, const char *what, const char *const *choices, int *out);
/* Optional keys: absent leaves *out untouched and returns true. */
bool gr_yopt_int(gr_ydoc *y, gr_ynode *map, const char *key, int64_t min, int64_t max, int64_t *out);
bool gr_yopt_float(gr_ydoc *y, gr_ynode *map, const char *key, double min, double max, double *out);
bool gr_yopt_bool(gr_ydoc *y, gr_ynode *map, const char *key, bool *out);

/* A path written in file `y` is relative to that file's directory; returns an arena string. */
const char *gr_ypath(gr_ydoc *y, const char *path);

#endif
