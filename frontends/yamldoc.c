/* yamldoc.c — loading YAML with libyaml's document API and checking it against a schema, with
 * diagnostics that point at the offending key or value. libyaml's marks are 0-based; ours are 1-based. */
#include "frontends/yamldoc.h"
#include "ir/input.h"
#include <unistd.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_FILE = 16 << 20 };

static gr_loc mark_loc(const gr_ydoc *y, yaml_mark_t m) {
  return (gr_loc){y->path, (int)m.line + 1, (int)m.column + 1, 1};
}

gr_loc gr_yloc(const gr_ydoc *y, const gr_ynode *n) {
  gr_loc l = mark_loc(y, n->start_mark);
  if (n->type == YAML_SCALAR_NODE && n->end_mark.line == n->start_mark.line)
    l.len = (int)(n->end_mark.column - n->start_mark.column);
  return l;
}

static char *read_file(const char *path, gr_loc from, size_t *len, gr_diag *d) {
  int fd = gr_open_input(d, path, from, "model file", NULL);
  FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
  if (!f) {
    if (fd >= 0) {
      gr_error(d, gr_loc_file(path), "cannot open: %s", strerror(errno));
      close(fd);
    }
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  GR_CHECK(buf != NULL, "out of memory");
  for (;;) {
    if (n == cap) {
      if (cap >= MAX_FILE) {
        gr_error(d, gr_loc_file(path), "file is larger than %d MiB; this is not a graft YAML file", MAX_FILE >> 20);
        free(buf);
        fclose(f);
        return NULL;
      }
      cap *= 2;
      buf = realloc(buf, cap);
      GR_CHECK(buf != NULL, "out of memory");
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  if (ferror(f)) {
    gr_error(d, gr_loc_file(path), "read error: %s", strerror(errno));
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *len = n;
  return buf;
}

/* True if the parser stopped at a tab in a line's indentation, which libyaml words as "found character
 * that cannot start any token". */
static bool at_indent_tab(const char *text, size_t len, yaml_mark_t m) {
  const char *s = text, *end = text + len;
  for (size_t l = 0; l < m.line; l++) {
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl) return false;
    s = nl + 1;
  }
  for (size_t c = 0; s + c < end && (s[c] == ' ' || s[c] == '\t'); c++)
    if (c == m.column) return s[c] == '\t';
  return false;
}

static void parser_error(gr_ydoc *y, yaml_parser_t *p, const char *text, size_t len) {
  if (p->error == YAML_SCANNER_ERROR && at_indent_tab(text, len, p->problem_mark)) {
    gr_error(y->diag, mark_loc(y, p->problem_mark), "tab character in indentation; YAML indents with spaces only");
    return;
  }
  const char *problem = p->problem ? p->problem : "malformed YAML";
  if (p->error == YAML_READER_ERROR) {
    /* bad encoding: libyaml gives a byte offset, not a mark; the column counts bytes */
    gr_loc l = {y->path, 1, 1, 1};
    for (size_t i = 0; i < p->problem_offset && i < len; i++) {
      if (text[i] == '\n') l.line++, l.col = 1;
      else l.col++;
    }
    if (p->problem_value >= 0)
      gr_error(y->diag, l, "%s (0x%02X at byte offset %zu)", problem, (unsigned)p->problem_value, p->problem_offset);
    else
      gr_error(y->diag, l, "%s at byte offset %zu", problem, p->problem_offset);
    return;
  }
  if (p->context && (p->context_mark.line != p->problem_mark.line || p->context_mark.column != p->problem_mark.column)) {
    gr_error(y->diag, mark_loc(y, p->problem_mark), "%s", problem);
    gr_note(y->diag, mark_loc(y, p->context_mark), "%s", p->context);
  } else if (p->context) {
    gr_error(y->diag, mark_loc(y, p->problem_mark), "%s %s", p->context, problem);
  } else {
    gr_error(y->diag, mark_loc(y, p->problem_mark), "%s", problem);
  }
}

bool gr_ydoc_load(gr_ydoc *y, const char *path, gr_loc from, gr_diag *d, gr_arena *a) {
  memset(y, 0, sizeof *y);
  y->path = gr_strdup(a, path);
  y->diag = d;
  y->arena = a;
  size_t len;
  char *text = read_file(path, from, &len, d);
  if (!text) return false;
  if (memchr(text, 0, len)) {
    gr_error(d, gr_loc_file(path), "file contains a NUL byte at offset %zu; expected YAML text",
             (size_t)((char *)memchr(text, 0, len) - text));
    free(text);
    return false;
  }
  gr_diag_add_source(d, y->path, text, len);
  yaml_parser_t p;
  GR_CHECK(yaml_parser_initialize(&p), "libyaml: out of memory");
  yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
  bool ok = yaml_parser_load(&p, &y->doc);
  if (!ok) {
    parser_error(y, &p, text, len);
  } else {
    y->loaded = true;
    if (!yaml_document_get_root_node(&y->doc)) {
      gr_error(d, (gr_loc){y->path, 1, 1, 0}, "empty file: expected a YAML mapping");
      ok = false;
    } else {
      yaml_document_t second;
      if (!yaml_parser_load(&p, &second)) {
        parser_error(y, &p, text, len);
        ok = false;
      } else {
        yaml_node_t *r2 = yaml_document_get_root_node(&second);
        if (r2) {
          gr_error(d, mark_loc(y, second.start_mark), "a second YAML document starts here; graft reads one document per file");
          ok = false;
        }
        yaml_document_delete(&second);
      }
    }
  }
  yaml_parser_delete(&p);
  free(text);
  return ok;
}

void gr_ydoc_free(gr_ydoc *y) {
  if (y->loaded) yaml_document_delete(&y->doc);
  y->loaded = false;
}

gr_ynode *gr_yroot(gr_ydoc *y) { return yaml_document_get_root_node(&y->doc); }

static const char *sval(const gr_ynode *n) { return (const char *)n->data.scalar.value; }

static bool is_null(const gr_ynode *n) {
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
  const char *s = sval(n);
  return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

const char *gr_ydescribe(gr_ydoc *y, const gr_ynode *n) {
  switch (n->type) {
  case YAML_MAPPING_NODE: return "a mapping";
  case YAML_SEQUENCE_NODE: {
    long items = (long)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (!items) return "an empty list";
    return items == 1 ? "a list of 1 item" : gr_sprintf(y->arena, "a list of %ld items", items);
  }
  case YAML_SCALAR_NODE:
    if (is_null(n)) return "nothing";
    /* so that `epochs: "1"` does not read "must be an integer, got '1'" */
    if (n->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE || n->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE)
      return strlen(sval(n)) > 40 ? gr_sprintf(y->arena, "the quoted string '%.37s...'", sval(n))
                                  : gr_sprintf(y->arena, "the quoted string '%s'", sval(n));
    if (strlen(sval(n)) > 40) return gr_sprintf(y->arena, "'%.37s...'", sval(n));
    return gr_sprintf(y->arena, "'%s'", sval(n));
  default: return "an empty node";
  }
}

static gr_ynode *node_at(gr_ydoc *y, int idx) { return yaml_document_get_node(&y->doc, idx); }

static bool want_mapping(gr_ydoc *y, gr_ynode *n, const char *what) {
  if (n->type == YAML_MAPPING_NODE) return true;
  gr_error(y->diag, gr_yloc(y, n), "%s must be a mapping (key: value lines), got %s", what, gr_ydescribe(y, n));
  return false;
}

bool gr_ymap_check(gr_ydoc *y, gr_ynode *map, const char *what, const char *const *allowed) {
  return gr_ymap_check_hinted(y, map, what, allowed, NULL);
}

bool gr_ymap_check_hinted(gr_ydoc *y, gr_ynode *map, const char *what, const char *const *allowed, const char *const *elsewhere) {
  if (!want_mapping(y, map, what)) return false;
  bool ok = true;
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    gr_ynode *k = node_at(y, p->key);
    if (k->type != YAML_SCALAR_NODE) {
      gr_error(y->diag, gr_yloc(y, k), "keys in %s must be plain words, got %s", what, gr_ydescribe(y, k));
      ok = false;
      continue;
    }
    const char *key = sval(k);
    if (!strcmp(key, "<<")) {
      gr_error(y->diag, gr_yloc(y, k), "YAML merge keys ('<<') are not supported; write the keys out");
      ok = false;
      continue;
    }
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
      gr_ynode *k2 = node_at(y, q->key);
      if (k2->type == YAML_SCALAR_NODE && !strcmp(sval(k2), key)) {
        gr_error(y->diag, gr_yloc(y, k), "duplicate key '%s' in %s", key, what);
        gr_note(y->diag, gr_yloc(y, k2), "first given here");
        ok = false;
        break;
      }
    }
    bool known = !allowed; /* NULL: any key (a mapping of user names), still checked for duplicates */
    for (const char *const *a = allowed; a && *a; a++)
      if (!strcmp(*a, key)) known = true;
    if (known) continue;
    ok = false;
    const char *section = NULL;
    for (const char *const *e = elsewhere; e && *e; e += 2)
      if (!strcmp(e[0], key)) section = e[1];
    if (section) {
      gr_error(y->diag, gr_yloc(y, k), "'%s' belongs under '%s', not at the top of %s", key, section, what);
      continue;
    }
    const char *sug = gr_suggest(key, allowed);
    if (sug) {
      gr_error(y->diag, gr_yloc(y, k), "unknown key '%s' (did you mean '%s'?)", key, sug);
    } else {
      char list[512];
      size_t len = 0;
      list[0] = 0;
      for (const char *const *a = allowed; *a && len < sizeof list - 64; a++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", a == allowed ? "" : ", ", *a);
      gr_error(y->diag, gr_yloc(y, k), "unknown key '%s' in %s; expected one of: %s", key, what, list);
    }
  }
  return ok;
}

static yaml_node_pair_t *find_pair(gr_ydoc *y, gr_ynode *map, const char *key) {
  if (!map || map->type != YAML_MAPPING_NODE) return NULL;
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    gr_ynode *k = node_at(y, p->key);
    if (k->type == YAML_SCALAR_NODE && !strcmp(sval(k), key)) return p;
  }
  return NULL;
}

static gr_ynode *substituted(gr_ydoc *y, gr_ynode *n) { return n && y->subst ? y->subst(y->subst_ctx, n) : n; }

gr_ynode *gr_yget(gr_ydoc *y, gr_ynode *map, const char *key) {
  yaml_node_pair_t *p = find_pair(y, map, key);
  return p ? substituted(y, node_at(y, p->value)) : NULL;
}

gr_loc gr_ykey_loc(gr_ydoc *y, gr_ynode *map, const char *key) {
  yaml_node_pair_t *p = find_pair(y, map, key);
  return p ? gr_yloc(y, node_at(y, p->key)) : gr_yloc(y, map);
}

gr_ynode *gr_yreq(gr_ydoc *y, gr_ynode *map, const char *key, const char *what) {
  gr_ynode *v = gr_yget(y, map, key);
  if (!v) {
    gr_loc l = gr_yloc(y, map);
    l.len = 1;
    gr_error(y->diag, l, "missing required key '%s' in %s", key, what);
  }
  return v;
}

int gr_ylist_len(const gr_ynode *n) {
  if (n->type != YAML_SEQUENCE_NODE) return -1;
  return (int)(n->data.sequence.items.top - n->data.sequence.items.start);
}

gr_ynode *gr_ylist_at(gr_ydoc *y, gr_ynode *n, int i) { return substituted(y, node_at(y, n->data.sequence.items.start[i])); }

static bool want_scalar(gr_ydoc *y, gr_ynode *n, const char *what, const char *kind) {
  if (n->type == YAML_SCALAR_NODE && !is_null(n)) return true;
  gr_error(y->diag, gr_yloc(y, n), "%s must be %s, got %s", what, kind, gr_ydescribe(y, n));
  return false;
}

bool gr_ystr(gr_ydoc *y, gr_ynode *n, const char *what, const char **out) {
  if (!want_scalar(y, n, what, "a string")) return false;
  *out = gr_strdup(y->arena, sval(n));
  return true;
}

bool gr_yint(gr_ydoc *y, gr_ynode *n, const char *what, int64_t min, int64_t max, int64_t *out) {
  if (!want_scalar(y, n, what, "an integer")) return false;
  const char *s = sval(n);
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || end == s || *end || errno == ERANGE) {
    gr_error(y->diag, gr_yloc(y, n), "%s must be an integer, got %s", what, gr_ydescribe(y, n));
    return false;
  }
  if (v < min || v > max) {
    gr_error(y->diag, gr_yloc(y, n), "%s must be between %lld and %lld, got %lld", what, (long long)min, (long long)max, v);
    return false;
  }
  *out = v;
  return true;
}

bool gr_yfloat(gr_ydoc *y, gr_ynode *n, const char *what, double min, double max, double *out) {
  if (!want_scalar(y, n, what, "a number")) return false;
  const char *s = sval(n);
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || end == s || *end || !isfinite(v)) {
    gr_error(y->diag, gr_yloc(y, n), "%s must be a finite number, got %s", what, gr_ydescribe(y, n));
    return false;
  }
  if (v < min || v > max) {
    gr_error(y->diag, gr_yloc(y, n), "%s must be between %g and %g, got %g", what, min, max, v);
    return false;
  }
  *out = v;
  return true;
}

bool gr_ybool(gr_ydoc *y, gr_ynode *n, const char *what, bool *out) {
  if (!want_scalar(y, n, what, "true or false")) return false;
  const char *s = sval(n);
  if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
    if (!strcmp(s, "true") || !strcmp(s, "True")) return *out = true, true;
    if (!strcmp(s, "false") || !strcmp(s, "False")) return *out = false, true;
  }
  gr_error(y->diag, gr_yloc(y, n), "%s must be true or false, got %s", what, gr_ydescribe(y, n));
  return false;
}

bool gr_yenum(gr_ydoc *y, gr_ynode *n, const char *what, const char *const *choices, int *out) {
  const char *s;
  if (!gr_ystr(y, n, what, &s)) return false;
  for (int i = 0; choices[i]; i++)
    if (!strcmp(choices[i], s)) return *out = i, true;
  const char *sug = gr_suggest(s, choices);
  char list[512];
  size_t len = 0;
  list[0] = 0;
  for (int i = 0; choices[i] && len < sizeof list - 64; i++)
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", choices[i]);
  if (sug)
    gr_error(y->diag, gr_yloc(y, n), "unknown %s '%s' (did you mean '%s'?)", what, s, sug);
  else
    gr_error(y->diag, gr_yloc(y, n), "unknown %s '%s'; expected one of: %s", what, s, list);
  return false;
}

static const char *quoted(gr_ydoc *y, const char *key) { return gr_sprintf(y->arena, "'%s'", key); }

bool gr_yopt_int(gr_ydoc *y, gr_ynode *map, const char *key, int64_t min, int64_t max, int64_t *out) {
  gr_ynode *v = gr_yget(y, map, key);
  return !v || gr_yint(y, v, quoted(y, key), min, max, out);
}

bool gr_yopt_float(gr_ydoc *y, gr_ynode *map, const char *key, double min, double max, double *out) {
  gr_ynode *v = gr_yget(y, map, key);
  return !v || gr_yfloat(y, v, quoted(y, key), min, max, out);
}

bool gr_yopt_bool(gr_ydoc *y, gr_ynode *map, const char *key, bool *out) {
  gr_ynode *v = gr_yget(y, map, key);
  return !v || gr_ybool(y, v, quoted(y, key), out);
}

const char *gr_ypath(gr_ydoc *y, const char *path) {
  if (path[0] == '/') return gr_strdup(y->arena, path);
  const char *slash = strrchr(y->path, '/');
  if (!slash) return gr_strdup(y->arena, path);
  return gr_sprintf(y->arena, "%.*s/%s", (int)(slash - y->path), y->path, path);
}
