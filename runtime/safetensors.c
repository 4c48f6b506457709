/* safetensors.c — reads and writes safetensors files. The stance, as in idx.c: the file is untrusted input.
 * The whole file is read into memory (its size comes from the bytes that actually arrive), the header
 * length is checked against the file and a 100 MB cap before anything else, and the JSON header is parsed
 * twice by a small strict parser of our own: first for syntax alone (RFC 8259 with UTF-8 checked, escapes
 * and surrogate pairs decoded, nesting capped), so a malformed header is reported at the byte where it goes
 * wrong; then for meaning, walking the known schema and checking each tensor entry in header order (keys,
 * dtype, shape, offsets, byte size); then across tensors (duplicate names, overlaps, unused bytes). Nothing
 * is allocated from a size the file claims: allocations grow with header text that has been read. Every
 * failure is one user diagnostic; the reader never exits or aborts on bad input.
 *
 * The writer composes the header in memory, checks everything it would check on reading (so graft never
 * writes a file it would refuse), and replaces the target atomically through a temp file and rename(2). */
#include "runtime/safetensors.h"
#include "ir/atomic.h"
#include "runtime/runtime.h"
#include "ir/input.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_LIMIT ((uint64_t)100000000) /* the reference loader's MAX_HEADER_SIZE: 100 MB */
enum {
  MAX_RANK = 8,
  MAX_DEPTH = 64,         /* JSON nesting; a valid header needs 3 */
  SHOW_NAME = 80,         /* bytes of a name quoted in a message */
  SHOW_BUF = SHOW_NAME + 8,
  SHAPE_BUF = MAX_RANK * 22 + 8,
  IO_CHUNK = 1 << 30,     /* read(2)/write(2) sizes stay well within ssize_t */
};

/* ---- the file's data types ---- */

static const struct {
  const char *name;
  gr_st_dtype dtype;
  int size;
} dtypes[] = {
    {"F64", GR_ST_F64, 8},   {"F32", GR_ST_F32, 4},       {"F16", GR_ST_F16, 2},       {"BF16", GR_ST_BF16, 2},
    {"I64", GR_ST_I64, 8},   {"I32", GR_ST_I32, 4},       {"I16", GR_ST_OTHER, 2},     {"I8", GR_ST_OTHER, 1},
    {"U64", GR_ST_OTHER, 8}, {"U32", GR_ST_OTHER, 4},     {"U16", GR_ST_OTHER, 2},     {"U8", GR_ST_U8, 1},
    {"BOOL", GR_ST_OTHER, 1}, {"F8_E5M2", GR_ST_OTHER, 1}, {"F8_E4M3", GR_ST_OTHER, 1},
    {"F8_E8M0", GR_ST_OTHER, 1}, {"C64", GR_ST_OTHER, 8},
};

int gr_st_dtype_size(const char *dtype_name) {
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (strcmp(dtypes[i].name, dtype_name) == 0) return dtypes[i].size;
  return 0;
}

static gr_st_dtype dtype_of(const char *dtype_name) {
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (strcmp(dtypes[i].name, dtype_name) == 0) return dtypes[i].dtype;
  return GR_ST_OTHER;
}

/* ---- small helpers ---- */

/* Length of the well-formed UTF-8 sequence at s (avail > 0 bytes available), or 0 if there is none
 * (stray continuation byte, overlong form, surrogate, beyond U+10FFFF, or cut off). */
static size_t utf8_len(const uint8_t *s, size_t avail) {
  uint8_t c = s[0], lo = 0x80, hi = 0xBF;
  size_t len;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (avail < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return len;
}

/* Copies a name into dst (SHOW_BUF bytes) for a message: control bytes become '?', and a long name is
 * cut at a UTF-8 boundary and marked with "...". */
static void show(char *dst, const char *s, size_t len) {
  size_t cut = len;
  if (len > SHOW_NAME) {
    cut = SHOW_NAME;
    while (cut > 0 && ((uint8_t)s[cut] & 0xC0) == 0x80) cut--;
  }
  for (size_t i = 0; i < cut; i++) {
    uint8_t c = (uint8_t)s[i];
    dst[i] = c < 0x20 || c == 0x7F ? '?' : (char)c;
  }
  strcpy(dst + cut, cut < len ? "..." : "");
}

/* "[10, 20]", "[]" for a scalar. */
static void format_shape(char *buf, const int64_t *shape, int rank) {
  size_t k = 0;
  buf[k++] = '[';
  for (int i = 0; i < rank; i++)
    k += (size_t)snprintf(buf + k, SHAPE_BUF - k, "%s%" PRId64, i ? ", " : "", shape[i]);
  snprintf(buf + k, SHAPE_BUF - k, "]");
}

static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A name to find duplicates of: its bytes and where it was (header byte, or tensor index when writing). */
typedef struct keyref {
  const char *s;
  size_t len, at;
} keyref;

static int keyref_cmp(const void *a, const void *b) {
  const keyref *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
  if (c) return c;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  return x->at < y->at ? -1 : x->at > y->at;
}

/* Sorts k and finds the repeated name whose repeat comes earliest. Returns 1 and sets *dup (the repeat)
 * and *first (the earliest occurrence of that name) if there is one. */
static int find_duplicate(keyref *k, size_t n, keyref *dup, keyref *first) {
  if (n < 2) return 0;
  qsort(k, n, sizeof *k, keyref_cmp);
  int found = 0;
  size_t group = 0;
  for (size_t i = 1; i < n; i++) {
    if (keyref_cmp(&(keyref){k[i].s, k[i].len, 0}, &(keyref){k[group].s, k[group].len, 0}) != 0) {
      group = i;
      continue;
    }
    if (!found || k[i].at < dup->at) { /* the first repeat in a group has the group's smallest repeat offset */
      *dup = k[i];
      *first = k[group];
      found = 1;
    }
  }
  return found;
}

/* ---- a strict JSON scanner over a byte range ---- */

typedef struct jp {
  const uint8_t *s;
  size_t n, pos;
  const char *unit;   /* what byte offsets count in: "header" (reading) or "metadata" (the writer's argument) */
  const char *prefix; /* "" when reading, "cannot write: " when writing */
  const char *path;
  gr_diag *d;
} jp;

static void jerror(jp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jerror(jp *p, const char *fmt, ...) {
  char msg[1800];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  gr_error(p->d, gr_loc_file(p->path), "%s%s", p->prefix, msg);
}

static int oom(jp *p) {
  jerror(p, "out of memory while reading the %s", p->unit);
  return -1;
}

static int peek(const jp *p) { return p->pos < p->n ? p->s[p->pos] : -1; }

static void ws(jp *p) {
  while (p->pos < p->n) {
    uint8_t c = p->s[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

/* Skips whitespace and consumes c if it comes next. */
static int punct(jp *p, char c) {
  ws(p);
  if (peek(p) != (uint8_t)c) return 0;
  p->pos++;
  return 1;
}

/* What the byte at `at` is, for "found ..." in messages. */
static void describe(const jp *p, size_t at, char *buf, size_t n) {
  if (at >= p->n)
    snprintf(buf, n, "the end of the %s", p->unit);
  else if (p->s[at] > 0x20 && p->s[at] < 0x7F)
    snprintf(buf, n, "'%c'", p->s[at]);
  else
    snprintf(buf, n, "byte 0x%02X", p->s[at]);
}

static int bad_json(jp *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad_json(jp *p, size_t at, const char *fmt, ...) {
  char detail[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  jerror(p, "%s is not valid JSON at %s byte %zu: %s", p->unit, p->unit, at, detail);
  return -1;
}

static int expected(jp *p, const char *what) {
  char found[48];
  describe(p, p->pos, found, sizeof found);
  return bad_json(p, p->pos, "expected %s, found %s", what, found);
}

/* The kind of the (syntactically valid) value at p->pos, for messages. */
static const char *kind_at(const jp *p) {
  switch (peek(p)) {
  case '{': return "an object";
  case '[': return "an array";
  case '"': return "a string";
  case 't': case 'f': return "a boolean";
  case 'n': return "null";
  default: return "a number";
  }
}

static int hex4(const jp *p, size_t at, unsigned *v) {
  if (at > p->n || p->n - at < 4) return -1;
  *v = 0;
  for (size_t i = at; i < at + 4; i++) {
    uint8_t c = p->s[i];
    unsigned h = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                 : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                 : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                        : 16u;
    if (h == 16) return -1;
    *v = *v << 4 | h;
  }
  return 0;
}

static size_t put_utf8(uint8_t *out, unsigned cp) {
  if (cp < 0x80) {
    if (out) out[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    if (out) out[0] = (uint8_t)(0xC0 | cp >> 6), out[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    if (out)
      out[0] = (uint8_t)(0xE0 | cp >> 12), out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)),
      out[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  if (out)
    out[0] = (uint8_t)(0xF0 | cp >> 18), out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F)),
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)), out[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

/* Scans the string starting at p->pos (a '"'), checking escapes and UTF-8, and leaves p->pos after the
 * closing quote. If out is non-NULL the decoded bytes go there; they never outnumber the raw bytes between
 * the quotes (an escape is at least as long as what it stands for). *len receives the decoded length. */
static int scan_string(jp *p, uint8_t *out, size_t *len) {
  if (peek(p) != '"') return expected(p, "a string");
  size_t start = p->pos++, k = 0;
  for (;;) {
    if (p->pos >= p->n) return bad_json(p, start, "the string starting here is not terminated");
    uint8_t c = p->s[p->pos];
    if (c == '"') break;
    if (c < 0x20) return bad_json(p, p->pos, "control byte 0x%02X inside a string (it must be escaped)", c);
    if (c != '\\') {
      size_t l = utf8_len(p->s + p->pos, p->n - p->pos);
      if (!l) return bad_json(p, p->pos, "invalid UTF-8 (byte 0x%02X) inside a string", c);
      if (out) memcpy(out + k, p->s + p->pos, l);
      k += l;
      p->pos += l;
      continue;
    }
    size_t at = p->pos;
    if (at + 1 >= p->n) return bad_json(p, start, "the string starting here is not terminated");
    uint8_t ch;
    switch (p->s[at + 1]) {
    case '"': ch = '"'; break;
    case '\\': ch = '\\'; break;
    case '/': ch = '/'; break;
    case 'b': ch = '\b'; break;
    case 'f': ch = '\f'; break;
    case 'n': ch = '\n'; break;
    case 'r': ch = '\r'; break;
    case 't': ch = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      size_t next = at + 6;
      if (hex4(p, at + 2, &cp)) return bad_json(p, at, "\\u must be followed by four hexadecimal digits");
      if (cp >= 0xDC00 && cp <= 0xDFFF)
        return bad_json(p, at, "\\u%04X is a low surrogate without a high surrogate before it", cp);
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (next + 1 >= p->n || p->s[next] != '\\' || p->s[next + 1] != 'u' || hex4(p, next + 2, &lo) ||
            lo < 0xDC00 || lo > 0xDFFF)
          return bad_json(p, at, "\\u%04X is a high surrogate not followed by a low surrogate \\uDC00-\\uDFFF", cp);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        next += 6;
      }
      k += put_utf8(out ? out + k : NULL, cp);
      p->pos = next;
      continue;
    }
    default: {
      char found[48];
      describe(p, at + 1, found, sizeof found);
      return bad_json(p, at, "invalid escape: '\\' followed by %s (expected one of \" \\ / b f n r t u)", found);
    }
    }
    if (out) out[k] = ch;
    k++;
    p->pos = at + 2;
  }
  p->pos++;
  if (len) *len = k;
  return 0;
}

/* Reads the string at p->pos into a malloc'd NUL-terminated buffer (*len excludes the NUL). */
static int read_string(jp *p, char **out, size_t *len) {
  size_t start = p->pos;
  if (scan_string(p, NULL, len)) return -1;
  char *s = malloc(p->pos - start); /* raw length with both quotes >= decoded length + 1 */
  if (!s) return oom(p);
  p->pos = start;
  if (scan_string(p, (uint8_t *)s, len)) { /* cannot fail: it just succeeded */
    free(s);
    return -1;
  }
  s[*len] = 0;
  *out = s;
  return 0;
}

/* A number as written. mag is its magnitude when `integer` (no fraction, no exponent) and not `big`
 * (above INT64_MAX). */
typedef struct jnum {
  size_t at, len;
  int neg, integer, big;
  uint64_t mag;
} jnum;

static int is_digit(int c) { return c >= '0' && c <= '9'; }

static int scan_number(jp *p, jnum *x) {
  memset(x, 0, sizeof *x);
  x->at = p->pos;
  x->integer = 1;
  if (peek(p) == '-') {
    x->neg = 1;
    p->pos++;
  }
  if (!is_digit(peek(p))) return expected(p, "a digit");
  if (peek(p) == '0') {
    p->pos++;
    if (is_digit(peek(p))) return bad_json(p, p->pos - 1, "a number cannot start with 0 followed by digits");
  } else {
    while (is_digit(peek(p))) {
      unsigned dg = (unsigned)(peek(p) - '0');
      if (!x->big && x->mag > ((uint64_t)INT64_MAX - dg) / 10) x->big = 1;
      if (!x->big) x->mag = x->mag * 10 + dg;
      p->pos++;
    }
  }
  if (peek(p) == '.') {
    x->integer = 0;
    p->pos++;
    if (!is_digit(peek(p))) return expected(p, "a digit after the decimal point");
    while (is_digit(peek(p))) p->pos++;
  }
  if (peek(p) == 'e' || peek(p) == 'E') {
    x->integer = 0;
    p->pos++;
    if (peek(p) == '+' || peek(p) == '-') p->pos++;
    if (!is_digit(peek(p))) return expected(p, "a digit in the exponent");
    while (is_digit(peek(p))) p->pos++;
  }
  x->len = p->pos - x->at;
  return 0;
}

static int scan_literal(jp *p, const char *word) {
  size_t at = p->pos, len = strlen(word);
  if (p->n - at < len || memcmp(p->s + at, word, len) != 0) return expected(p, "a value");
  p->pos += len;
  return 0;
}

static int skip_value(jp *p, int depth);

static int skip_container(jp *p, int depth) {
  int obj = peek(p) == '{';
  char close = obj ? '}' : ']';
  if (depth >= MAX_DEPTH) return bad_json(p, p->pos, "nesting deeper than %d levels", MAX_DEPTH);
  p->pos++;
  if (punct(p, close)) return 0;
  for (;;) {
    if (obj) {
      ws(p);
      if (peek(p) != '"') return expected(p, "a string key");
      if (scan_string(p, NULL, NULL)) return -1;
      if (!punct(p, ':')) return expected(p, "':' after the key");
    }
    if (skip_value(p, depth + 1)) return -1;
    if (punct(p, ',')) continue;
    if (punct(p, close)) return 0;
    return expected(p, obj ? "',' or '}'" : "',' or ']'");
  }
}

static int skip_value(jp *p, int depth) {
  jnum x;
  ws(p);
  switch (peek(p)) {
  case '{': case '[': return skip_container(p, depth);
  case '"': return scan_string(p, NULL, NULL);
  case 't': return scan_literal(p, "true");
  case 'f': return scan_literal(p, "false");
  case 'n': return scan_literal(p, "null");
  default:
    if (peek(p) == '-' || is_digit(peek(p))) return scan_number(p, &x);
    return expected(p, "a value");
  }
}

/* Checks the syntax of the whole range: one value, then only whitespace (the reference pads with spaces). */
static int check_syntax(jp *p) {
  p->pos = 0;
  if (skip_value(p, 0)) return -1;
  ws(p);
  if (p->pos < p->n) {
    char found[48];
    describe(p, p->pos, found, sizeof found);
    return bad_json(p, p->pos, "expected only whitespace after the top-level object, found %s", found);
  }
  p->pos = 0;
  return 0;
}

/* ---- the schema ---- */

/* "__metadata__": {"key": "string value", ...} — or null, meaning none. Keys must be distinct.
 * On success *text is a malloc'd copy of the object's text (NULL for null). */
static int parse_metadata(jp *p, char **text) {
  ws(p);
  size_t at = p->pos;
  *text = NULL;
  if (peek(p) == 'n') return scan_literal(p, "null");
  if (peek(p) != '{') {
    jerror(p, "__metadata__ at %s byte %zu is %s, expected an object whose values are strings", p->unit, at,
           kind_at(p));
    return -1;
  }
  keyref *keys = NULL;
  size_t nk = 0, cap = 0;
  int rc = -1;
  p->pos++;
  if (!punct(p, '}')) {
    for (;;) {
      ws(p);
      size_t kat = p->pos;
      char *key;
      size_t klen;
      if (nk == cap) {
        size_t ncap = cap ? 2 * cap : 8;
        keyref *grown = realloc(keys, ncap * sizeof *keys);
        if (!grown) {
          oom(p);
          goto done;
        }
        keys = grown;
        cap = ncap;
      }
      if (read_string(p, &key, &klen)) goto done;
      keys[nk++] = (keyref){key, klen, kat};
      if (!punct(p, ':')) { /* cannot happen after check_syntax */
        expected(p, "':'");
        goto done;
      }
      ws(p);
      if (peek(p) != '"') {
        char shown[SHOW_BUF];
        show(shown, key, klen);
        jerror(p, "__metadata__ key '%s' at %s byte %zu has %s as its value, expected a string", shown, p->unit,
               kat, kind_at(p));
        goto done;
      }
      if (scan_string(p, NULL, NULL)) goto done;
      if (punct(p, ',')) continue;
      if (punct(p, '}')) break;
      expected(p, "',' or '}'");
      goto done;
    }
  }
  keyref dup, first;
  if (find_duplicate(keys, nk, &dup, &first)) {
    char shown[SHOW_BUF];
    show(shown, dup.s, dup.len);
    jerror(p, "duplicate key '%s' in __metadata__ at %s byte %zu (first at %s byte %zu)", shown, p->unit, dup.at,
           p->unit, first.at);
    goto done;
  }
  *text = malloc(p->pos - at + 1);
  if (!*text) {
    oom(p);
    goto done;
  }
  memcpy(*text, p->s + at, p->pos - at);
  (*text)[p->pos - at] = 0;
  rc = 0;
done:
  for (size_t i = 0; i < nk; i++) free((char *)keys[i].s);
  free(keys);
  return rc;
}

/* Where each tensor's data lies and where its name stood, while the header is checked. */
typedef struct tinfo {
  uint64_t begin, end;
  size_t key_at;
} tinfo;

typedef struct st_parse {
  jp p;
  gr_st_file *f;
  tinfo *info; /* parallel to f->tensors */
  int cap;
  const uint8_t *data;
  uint64_t data_len;
} st_parse;

/* Reads a non-negative integer element of shape or data_offsets ("shape[1]", "data_offsets[0]").
 * `what` names the element for messages; `tail` says what a negative value violates. */
static int read_count(st_parse *ps, const char *tname, const char *what, int i, const char *tail, uint64_t *v) {
  jp *p = &ps->p;
  jnum x;
  ws(p);
  size_t at = p->pos;
  if (peek(p) != '-' && !is_digit(peek(p))) {
    jerror(p, "tensor '%s': %s[%d] at header byte %zu is %s, expected a non-negative integer", tname, what, i, at,
           kind_at(p));
    return -1;
  }
  if (scan_number(p, &x)) return -1;
  int shown = x.len > 40 ? 40 : (int)x.len;
  const char *text = (const char *)p->s + x.at;
  if (!x.integer) {
    jerror(p, "tensor '%s': %s[%d] at header byte %zu is %.*s%s, expected a non-negative integer", tname, what, i,
           at, shown, text, shown < (int)x.len ? "..." : "");
    return -1;
  }
  if (x.neg && x.mag != 0) { /* -0 is zero */
    jerror(p, "tensor '%s': %s[%d] at header byte %zu is %.*s%s: %s cannot be negative", tname, what, i, at, shown,
           text, shown < (int)x.len ? "..." : "", tail);
    return -1;
  }
  if (x.big) {
    jerror(p, "tensor '%s': %s[%d] at header byte %zu is %.*s%s, too large (at most 2^63-1)", tname, what, i, at,
           shown, text, shown < (int)x.len ? "..." : "");
    return -1;
  }
  *v = x.neg ? 0 : x.mag;
  return 0;
}

/* A tensor entry, the value of key `name` (malloc'd; owned by this function from here on):
 *   {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
 * in any order, each key exactly once, no others; dtype a name of letters, digits and '_' (1 to 15);
 * shape at most 8 non-negative integers; data_offsets two non-negative integers. Then: the element count
 * and byte size fit in 63 bits, begin <= end <= the data buffer's length, and end - begin is the byte size
 * (when the dtype's element size is known). Appends the tensor to ps->f. */
static int parse_entry(st_parse *ps, char *name, size_t name_len, size_t key_at) {
  jp *p = &ps->p;
  char tname[SHOW_BUF];
  show(tname, name, name_len);
  char dtype[16] = "";
  int rank = 0, seen[3] = {0, 0, 0};
  int64_t shape[MAX_RANK];
  uint64_t off[2] = {0, 0};
  size_t entry_at, off_at = 0, shape_at = 0;
  static const char *const keys[3] = {"dtype", "shape", "data_offsets"};

  if (name_len == 0) {
    jerror(p, "empty tensor name at header byte %zu", key_at);
    goto fail;
  }
  if (memchr(name, 0, name_len)) {
    jerror(p, "tensor '%s': name at header byte %zu contains a NUL character (\\u0000)", tname, key_at);
    goto fail;
  }
  ws(p);
  entry_at = p->pos;
  if (peek(p) != '{') {
    jerror(p, "tensor '%s': entry at header byte %zu is %s, expected an object with \"dtype\", \"shape\" and "
              "\"data_offsets\"", tname, entry_at, kind_at(p));
    goto fail;
  }
  p->pos++;
  if (!punct(p, '}')) {
    for (;;) {
      ws(p);
      size_t kat = p->pos;
      char *key;
      size_t klen;
      if (read_string(p, &key, &klen)) goto fail;
      int which = -1;
      for (int k = 0; k < 3; k++)
        if (klen == strlen(keys[k]) && memcmp(key, keys[k], klen) == 0) which = k;
      if (which < 0) {
        char shown[SHOW_BUF];
        show(shown, key, klen);
        free(key);
        jerror(p, "tensor '%s': unknown key \"%s\" at header byte %zu (expected \"dtype\", \"shape\" and "
                  "\"data_offsets\")", tname, shown, kat);
        goto fail;
      }
      free(key);
      if (seen[which]) {
        jerror(p, "tensor '%s': duplicate key \"%s\" at header byte %zu", tname, keys[which], kat);
        goto fail;
      }
      seen[which] = 1;
      if (!punct(p, ':')) { /* cannot happen after check_syntax */
        expected(p, "':'");
        goto fail;
      }
      ws(p);
      size_t vat = p->pos;
      if (which == 0) { /* dtype */
        if (peek(p) != '"') {
          jerror(p, "tensor '%s': dtype at header byte %zu is %s, expected a string such as \"F32\"", tname, vat,
                 kind_at(p));
          goto fail;
        }
        char *dt;
        size_t dlen;
        if (read_string(p, &dt, &dlen)) goto fail;
        int ok = dlen >= 1 && dlen < sizeof dtype;
        for (size_t i = 0; ok && i < dlen; i++)
          ok = (dt[i] >= 'A' && dt[i] <= 'Z') || (dt[i] >= 'a' && dt[i] <= 'z') || is_digit(dt[i]) || dt[i] == '_';
        if (!ok) {
          char shown[SHOW_BUF];
          show(shown, dt, dlen);
          free(dt);
          jerror(p, "tensor '%s': dtype \"%s\" at header byte %zu is not a dtype name (1 to 15 letters, digits "
                    "or '_', such as \"F32\")", tname, shown, vat);
          goto fail;
        }
        memcpy(dtype, dt, dlen + 1);
        free(dt);
      } else if (which == 1) { /* shape */
        shape_at = vat;
        if (peek(p) != '[') {
          jerror(p, "tensor '%s': shape at header byte %zu is %s, expected an array of non-negative integers",
                 tname, vat, kind_at(p));
          goto fail;
        }
        p->pos++;
        if (!punct(p, ']')) {
          for (;;) {
            uint64_t v;
            if (rank == MAX_RANK) {
              jerror(p, "tensor '%s': shape at header byte %zu has more than %d dimensions", tname, vat, MAX_RANK);
              goto fail;
            }
            if (read_count(ps, tname, "shape", rank, "dimensions", &v)) goto fail;
            shape[rank++] = (int64_t)v;
            if (punct(p, ',')) continue;
            if (punct(p, ']')) break;
            expected(p, "',' or ']'"); /* cannot happen after check_syntax */
            goto fail;
          }
        }
      } else { /* data_offsets */
        off_at = vat;
        if (peek(p) != '[') {
          jerror(p, "tensor '%s': data_offsets at header byte %zu is %s, expected [begin, end]", tname, vat,
                 kind_at(p));
          goto fail;
        }
        p->pos++;
        int count = 0;
        if (!punct(p, ']')) {
          for (;;) {
            if (count == 2) {
              jerror(p, "tensor '%s': data_offsets at header byte %zu has more than 2 elements, expected "
                        "[begin, end]", tname, vat);
              goto fail;
            }
            if (read_count(ps, tname, "data_offsets", count, "offsets", &off[count])) goto fail;
            count++;
            if (punct(p, ',')) continue;
            if (punct(p, ']')) break;
            expected(p, "',' or ']'"); /* cannot happen after check_syntax */
            goto fail;
          }
        }
        if (count != 2) {
          jerror(p, "tensor '%s': data_offsets at header byte %zu has %d element%s, expected [begin, end]", tname,
                 vat, count, count == 1 ? "" : "s");
          goto fail;
        }
      }
      if (punct(p, ',')) continue;
      if (punct(p, '}')) break;
      expected(p, "',' or '}'"); /* cannot happen after check_syntax */
      goto fail;
    }
  }
  for (int k = 0; k < 3; k++) {
    if (!seen[k]) {
      jerror(p, "tensor '%s': entry at header byte %zu is missing \"%s\"", tname, entry_at, keys[k]);
      goto fail;
    }
  }

  /* sizes: count the elements unless a dimension is 0 (then there are none, however large the others) */
  char shp[SHAPE_BUF];
  format_shape(shp, shape, rank);
  uint64_t count = 1;
  int zero = 0;
  for (int i = 0; i < rank; i++) zero |= shape[i] == 0;
  for (int i = 0; i < rank && !zero; i++) {
    if (count > (uint64_t)INT64_MAX / (uint64_t)shape[i]) {
      jerror(p, "tensor '%s': shape %s at header byte %zu has more than 2^63-1 elements", tname, shp, shape_at);
      goto fail;
    }
    count *= (uint64_t)shape[i];
  }
  if (zero) count = 0;
  int esize = gr_st_dtype_size(dtype);
  uint64_t need = 0;
  if (esize) {
    if (count > (uint64_t)INT64_MAX / (uint64_t)esize) {
      jerror(p, "tensor '%s': shape %s of %s needs more than 2^63-1 bytes", tname, shp, dtype);
      goto fail;
    }
    need = count * (uint64_t)esize;
  }
  if (off[0] > off[1]) {
    jerror(p, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] at header byte %zu: begin is after end", tname,
           off[0], off[1], off_at);
    goto fail;
  }
  if (off[1] > ps->data_len) {
    jerror(p, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end beyond the %" PRIu64
              " bytes of data after the header", tname, off[0], off[1], ps->data_len);
    goto fail;
  }
  if (esize && off[1] - off[0] != need) {
    jerror(p, "tensor '%s': shape %s of %s needs %" PRIu64 " bytes, data_offsets give %" PRIu64, tname, shp, dtype,
           need, off[1] - off[0]);
    goto fail;
  }

  gr_st_file *f = ps->f;
  if (f->n == ps->cap) {
    if (ps->cap > INT_MAX / 2) {
      oom(p);
      goto fail;
    }
    int ncap = ps->cap ? 2 * ps->cap : 8;
    gr_st_tensor *t = realloc(f->tensors, (size_t)ncap * sizeof *t);
    if (!t) {
      oom(p);
      goto fail;
    }
    f->tensors = t;
    tinfo *in = realloc(ps->info, (size_t)ncap * sizeof *in);
    if (!in) {
      oom(p);
      goto fail;
    }
    ps->info = in;
    ps->cap = ncap;
  }
  gr_st_tensor *t = &f->tensors[f->n];
  memset(t, 0, sizeof *t);
  t->name = name;
  t->dtype = dtype_of(dtype);
  memcpy(t->dtype_name, dtype, sizeof t->dtype_name);
  t->rank = rank;
  memcpy(t->shape, shape, (size_t)rank * sizeof shape[0]);
  t->data = ps->data + off[0];
  t->nbytes = (int64_t)(off[1] - off[0]);
  ps->info[f->n] = (tinfo){off[0], off[1], key_at};
  f->n++;
  return 0;
fail:
  free(name);
  return -1;
}

/* The header: {"name": entry, ..., "__metadata__": {...}} in any order. */
static int parse_header(st_parse *ps) {
  jp *p = &ps->p;
  ws(p);
  if (peek(p) != '{') {
    jerror(p, "header is not a JSON object: it is %s (at header byte %zu)", kind_at(p), p->pos);
    return -1;
  }
  p->pos++;
  if (punct(p, '}')) return 0;
  size_t meta_at = 0;
  int have_meta = 0;
  for (;;) {
    ws(p);
    size_t kat = p->pos;
    char *key;
    size_t klen;
    if (read_string(p, &key, &klen)) return -1;
    if (!punct(p, ':')) { /* cannot happen after check_syntax */
      free(key);
      return expected(p, "':'");
    }
    if (klen == 12 && memcmp(key, "__metadata__", 12) == 0) {
      free(key);
      if (have_meta) {
        jerror(p, "duplicate key \"__metadata__\" at header byte %zu (first at header byte %zu)", kat, meta_at);
        return -1;
      }
      have_meta = 1;
      meta_at = kat;
      if (parse_metadata(p, &ps->f->metadata_json)) return -1;
    } else if (parse_entry(ps, key, klen, kat)) {
      return -1;
    }
    if (punct(p, ',')) continue;
    if (punct(p, '}')) return 0;
    return expected(p, "',' or '}'"); /* cannot happen after check_syntax */
  }
}

static int check_duplicates(st_parse *ps) {
  gr_st_file *f = ps->f;
  if (f->n < 2) return 0;
  keyref *k = malloc((size_t)f->n * sizeof *k);
  if (!k) return oom(&ps->p);
  for (int i = 0; i < f->n; i++) k[i] = (keyref){f->tensors[i].name, strlen(f->tensors[i].name), ps->info[i].key_at};
  keyref dup, first;
  int found = find_duplicate(k, (size_t)f->n, &dup, &first);
  free(k);
  if (!found) return 0;
  char shown[SHOW_BUF];
  show(shown, dup.s, dup.len);
  jerror(&ps->p, "duplicate tensor name '%s' at header byte %zu (first at header byte %zu)", shown, dup.at,
         first.at);
  return -1;
}

typedef struct span {
  uint64_t begin, end;
  int idx;
} span;

static int span_cmp(const void *a, const void *b) {
  const span *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return (x->idx > y->idx) - (x->idx < y->idx);
}

static void report_hole(st_parse *ps, uint64_t from, uint64_t to, int before, int after) {
  char a[SHOW_BUF], b[SHOW_BUF], where[2 * SHOW_BUF + 64];
  gr_st_tensor *t = ps->f->tensors;
  if (before >= 0) show(a, t[before].name, strlen(t[before].name));
  if (after >= 0) show(b, t[after].name, strlen(t[after].name));
  if (before >= 0 && after >= 0)
    snprintf(where, sizeof where, "between tensors '%s' and '%s'", a, b);
  else if (after >= 0)
    snprintf(where, sizeof where, "before tensor '%s'", b);
  else if (before >= 0)
    snprintf(where, sizeof where, "after tensor '%s'", a);
  else
    snprintf(where, sizeof where, "the header lists no tensor data");
  jerror(&ps->p, "bytes %" PRIu64 "..%" PRIu64 " of the data are not used by any tensor (%s)", from, to, where);
}

/* The tensors' data ranges, in order of position, must tile the data buffer: no overlap, no gap, nothing
 * left over (the reference loader rejects all three). An empty tensor may sit at any tile boundary. */
static int check_layout(st_parse *ps) {
  gr_st_file *f = ps->f;
  span *s = malloc(((size_t)f->n + 1) * sizeof *s);
  if (!s) return oom(&ps->p);
  for (int i = 0; i < f->n; i++) s[i] = (span){ps->info[i].begin, ps->info[i].end, i};
  qsort(s, (size_t)f->n, sizeof *s, span_cmp);
  uint64_t pos = 0;
  int last = -1, rc = 0; /* last: the tensor that reaches pos */
  for (int k = 0; k < f->n && rc == 0; k++) {
    if (s[k].begin > pos) {
      report_hole(ps, pos, s[k].begin - 1, last, s[k].idx);
      rc = -1;
    } else if (s[k].begin < pos) {
      char a[SHOW_BUF], b[SHOW_BUF];
      const tinfo *x = &ps->info[last], *y = &ps->info[s[k].idx];
      show(a, f->tensors[last].name, strlen(f->tensors[last].name));
      show(b, f->tensors[s[k].idx].name, strlen(f->tensors[s[k].idx].name));
      jerror(&ps->p, "tensors '%s' and '%s' overlap: data_offsets [%" PRIu64 ", %" PRIu64 "] and [%" PRIu64
                     ", %" PRIu64 "]", a, b, x->begin, x->end, y->begin, y->end);
      rc = -1;
    } else if (s[k].end > pos) {
      pos = s[k].end;
      last = s[k].idx;
    }
  }
  if (rc == 0 && pos < ps->data_len) {
    report_hole(ps, pos, ps->data_len - 1, last, -1);
    rc = -1;
  }
  free(s);
  return rc;
}

/* ---- reading ---- */

/* Reads the whole file; the buffer grows only as bytes arrive (a regular file's size is the first guess). */
static int read_whole(const char *path, gr_diag *d, uint8_t **out, size_t *size) {
  gr_loc l = gr_loc_file(path);
  struct stat st;
  int fd = gr_open_input(d, path, (gr_loc){0}, NULL, &st);
  if (fd < 0) return -1;
  size_t cap = 1 << 16;
  if (S_ISREG(st.st_mode) && st.st_size >= 0 && (uint64_t)st.st_size < SIZE_MAX - 1)
    cap = (size_t)st.st_size + 1; /* + 1: end of file shows without growing */
  size_t have = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (!buf) {
      gr_error(d, l, "out of memory: cannot allocate %zu bytes to read the file", cap);
      close(fd);
      return -1;
    }
    if (have == cap) {
      size_t ncap = cap <= SIZE_MAX / 2 ? cap * 2 : 0;
      uint8_t *grown = ncap ? realloc(buf, ncap) : NULL;
      if (!grown) free(buf);
      buf = grown;
      cap = ncap ? ncap : SIZE_MAX;
      continue;
    }
    size_t want = cap - have < IO_CHUNK ? cap - have : IO_CHUNK;
    ssize_t k = read(fd, buf + have, want);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      gr_error(d, l, "read error after offset %zu: %s", have, strerror(errno));
      free(buf);
      close(fd);
      return -1;
    }
    if (k == 0) break;
    have += (size_t)k;
  }
  close(fd);
  *out = buf;
  *size = have;
  return 0;
}

int gr_st_open(const char *path, gr_st_file *out, gr_diag *d) {
  GR_ASSERT(path && out && d);
  memset(out, 0, sizeof *out);
  gr_loc l = gr_loc_file(path);
  gr_st_file f = {0};
  st_parse ps = {0};
  if (read_whole(path, d, &f.buf, &f.size)) return -1;
  if (f.size < 8) {
    gr_error(d, l, "file is %zu byte%s long, too short for the 8-byte header length at offset 0", f.size,
             f.size == 1 ? "" : "s");
    goto fail;
  }
  uint64_t hlen = get_le64(f.buf);
  if (hlen > HEADER_LIMIT) {
    gr_error(d, l, "header length %" PRIu64 " at offset 0 exceeds the limit of %" PRIu64 " bytes (100 MB)", hlen,
             HEADER_LIMIT);
    goto fail;
  }
  if (hlen > f.size - 8) {
    gr_error(d, l, "header length %" PRIu64 " at offset 0 is larger than the file: only %zu bytes follow it", hlen,
             f.size - 8);
    goto fail;
  }
  f.path = strdup(path);
  if (!f.path) {
    gr_error(d, l, "out of memory");
    goto fail;
  }
  ps.p = (jp){f.buf + 8, (size_t)hlen, 0, "header", "", path, d};
  ps.f = &f;
  ps.data = f.buf + 8 + hlen;
  ps.data_len = f.size - 8 - hlen;
  if (check_syntax(&ps.p) || parse_header(&ps) || check_duplicates(&ps) || check_layout(&ps)) goto fail;
  free(ps.info);
  *out = f;
  return 0;
fail:
  free(ps.info);
  gr_st_close(&f);
  return -1;
}

void gr_st_close(gr_st_file *f) {
  if (!f) return;
  for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
  free(f->tensors);
  free(f->metadata_json);
  free(f->buf);
  free(f->path);
  memset(f, 0, sizeof *f);
}

const gr_st_tensor *gr_st_find(const gr_st_file *f, const char *name) {
  for (int i = 0; i < f->n; i++)
    if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

/* ---- writing ---- */

/* A growing byte buffer; `oom` sticks once an allocation fails. */
typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_put(sbuf *b, const void *s, size_t n) {
  if (b->oom) return;
  if (n > b->cap - b->len) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) {
      if (cap > SIZE_MAX / 2) {
        b->oom = 1;
        return;
      }
      cap *= 2;
    }
    char *grown = realloc(b->p, cap);
    if (!grown) {
      b->oom = 1;
      return;
    }
    b->p = grown;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v) {
  char num[24];
  sb_put(b, num, (size_t)snprintf(num, sizeof num, "%" PRIu64, v));
}

/* A JSON string literal for s (valid UTF-8): quotes, backslashes and control bytes escaped. */
static void sb_json_string(sbuf *b, const char *s) {
  sb_put(b, "\"", 1);
  for (const char *c = s; *c; c++) {
    uint8_t ch = (uint8_t)*c;
    if (ch == '"' || ch == '\\') {
      char esc[2] = {'\\', (char)ch};
      sb_put(b, esc, 2);
    } else if (ch < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", ch);
      sb_put(b, esc, 6);
    } else {
      sb_put(b, c, 1);
    }
  }
  sb_put(b, "\"", 1);
}

/* Checks one tensor to be written and returns its byte size in *bytes. */
static int check_out(const char *path, const gr_st_out *t, int i, uint64_t *bytes, gr_diag *d) {
  gr_loc l = gr_loc_file(path);
  if (!t->name || !t->name[0]) {
    gr_error(d, l, "cannot write: tensor %d has an empty name", i);
    return -1;
  }
  size_t len = strlen(t->name);
  for (size_t k = 0; k < len;) {
    size_t u = utf8_len((const uint8_t *)t->name + k, len - k);
    if (!u) {
      gr_error(d, l, "cannot write: the name of tensor %d is not valid UTF-8 (byte 0x%02X at %zu)", i,
               (uint8_t)t->name[k], k);
      return -1;
    }
    k += u;
  }
  char tname[SHOW_BUF];
  show(tname, t->name, len);
  if (strcmp(t->name, "__metadata__") == 0) {
    gr_error(d, l, "cannot write: tensor %d is named \"__metadata__\", which the format reserves", i);
    return -1;
  }
  if (t->rank < 0 || t->rank > MAX_RANK) {
    gr_error(d, l, "cannot write: tensor '%s' has rank %d (0 to %d supported)", tname, t->rank, MAX_RANK);
    return -1;
  }
  if (t->rank > 0 && !t->shape) {
    gr_error(d, l, "cannot write: tensor '%s' has rank %d but no shape", tname, t->rank);
    return -1;
  }
  uint64_t count = 1;
  int zero = 0;
  for (int k = 0; k < t->rank; k++) {
    if (t->shape[k] < 0) {
      gr_error(d, l, "cannot write: tensor '%s': shape[%d] is %" PRId64 ": dimensions cannot be negative", tname, k,
               t->shape[k]);
      return -1;
    }
    zero |= t->shape[k] == 0;
  }
  for (int k = 0; k < t->rank && !zero; k++) {
    if (count > (uint64_t)INT64_MAX / 4 / (uint64_t)t->shape[k]) {
      char shp[SHAPE_BUF];
      format_shape(shp, t->shape, t->rank);
      gr_error(d, l, "cannot write: tensor '%s': shape %s of F32 needs more than 2^63-1 bytes", tname, shp);
      return -1;
    }
    count *= (uint64_t)t->shape[k];
  }
  if (zero) count = 0;
  if (count > 0 && !t->data) {
    gr_error(d, l, "cannot write: tensor '%s' has %" PRIu64 " element%s but no data", tname, count,
             count == 1 ? "" : "s");
    return -1;
  }
  *bytes = count * 4;
  return 0;
}

/* Builds the padded header, length field included. Returns -1 after reporting. */
static int build_header(const char *path, const gr_st_out *t, int n, const char *metadata_json, sbuf *b,
                        gr_diag *d) {
  gr_loc l = gr_loc_file(path);
  uint64_t total = 0;
  for (int i = 0; i < n; i++) {
    uint64_t bytes;
    if (check_out(path, t + i, i, &bytes, d)) return -1;
    if (bytes > (uint64_t)INT64_MAX - total) {
      gr_error(d, l, "cannot write: the tensors hold more than 2^63-1 bytes");
      return -1;
    }
    total += bytes;
  }
  if (n > 1) {
    keyref *k = malloc((size_t)n * sizeof *k);
    if (!k) {
      gr_error(d, l, "cannot write: out of memory");
      return -1;
    }
    for (int i = 0; i < n; i++) k[i] = (keyref){t[i].name, strlen(t[i].name), (size_t)i};
    keyref dup, first;
    int found = find_duplicate(k, (size_t)n, &dup, &first);
    free(k);
    if (found) {
      char shown[SHOW_BUF];
      show(shown, dup.s, dup.len);
      gr_error(d, l, "cannot write: duplicate tensor name '%s' (tensors %zu and %zu)", shown, first.at, dup.at);
      return -1;
    }
  }
  char *meta = NULL; /* the object's text, without surrounding whitespace; NULL for none (or null) */
  if (metadata_json) { /* the same checks as on reading, with offsets into the caller's text */
    jp p = {(const uint8_t *)metadata_json, strlen(metadata_json), 0, "metadata", "cannot write: ", path, d};
    if (check_syntax(&p) || parse_metadata(&p, &meta)) return -1;
  }

  sb_put(b, "\0\0\0\0\0\0\0\0{", 9);
  int comma = 0;
  if (meta) {
    sb_str(b, "\"__metadata__\":");
    sb_str(b, meta);
    comma = 1;
  }
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    uint64_t bytes = 0;
    check_out(path, t + i, i, &bytes, d); /* checked above: cannot fail */
    if (comma) sb_str(b, ",");
    comma = 1;
    sb_json_string(b, t[i].name);
    sb_str(b, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int k = 0; k < t[i].rank; k++) {
      if (k) sb_str(b, ",");
      sb_u64(b, (uint64_t)t[i].shape[k]);
    }
    sb_str(b, "],\"data_offsets\":[");
    sb_u64(b, off);
    sb_str(b, ",");
    sb_u64(b, off + bytes);
    sb_str(b, "]}");
    off += bytes;
  }
  sb_str(b, "}");
  free(meta);
  while (!b->oom && (b->len - 8) % 8 != 0) sb_str(b, " ");
  if (b->oom) {
    gr_error(d, l, "cannot write: out of memory while building the header");
    return -1;
  }
  if (b->len - 8 > HEADER_LIMIT) {
    gr_error(d, l, "cannot write: the header would be %zu bytes, over the limit of %" PRIu64 " bytes (100 MB)",
             b->len - 8, HEADER_LIMIT);
    return -1;
  }
  put_le64((uint8_t *)b->p, (uint64_t)(b->len - 8));
  return 0;
}

/* Writes floats as little-endian bytes; on a big-endian host through a byte-swapping chunk. */
static void write_f32(gr_atomic_file *f, const float *x, uint64_t bytes) {
  const uint16_t probe = 1;
  uint8_t first;
  memcpy(&first, &probe, 1);
  if (first == 1) {
    gr_atomic_write(f, x, (size_t)bytes);
    return;
  }
  uint8_t chunk[1 << 14];
  const uint8_t *src = (const uint8_t *)x;
  while (bytes > 0) {
    size_t n = bytes < sizeof chunk ? (size_t)bytes : sizeof chunk;
    for (size_t i = 0; i < n; i += 4)
      for (int j = 0; j < 4; j++) chunk[i + (size_t)j] = src[i + 3 - (size_t)j];
    gr_atomic_write(f, chunk, n);
    src += n;
    bytes -= n;
  }
}

static void fault_rename(void) { gr_fault("rename"); } /* tests: a crash with the temporary file complete */

int gr_st_write(const char *path, const gr_st_out *t, int n, const char *metadata_json, gr_diag *d) {
  GR_ASSERT(path && d);
  gr_loc l = gr_loc_file(path);
  if (n < 0 || (n > 0 && !t)) {
    gr_error(d, l, "cannot write: %d tensors%s", n, n > 0 ? " but no array of them" : "");
    return -1;
  }
  sbuf b = {0};
  if (build_header(path, t, n, metadata_json, &b, d)) {
    free(b.p);
    return -1;
  }

  gr_atomic_file f;
  if (!gr_atomic_begin(&f, path, d)) {
    free(b.p);
    return -1;
  }
  gr_atomic_write(&f, b.p, b.len);
  free(b.p);
  for (int i = 0; i < n; i++) {
    uint64_t bytes = 0;
    check_out(path, t + i, i, &bytes, d); /* checked in build_header: cannot fail */
    write_f32(&f, t[i].data, bytes);
  }
  return gr_atomic_commit(&f, fault_rename, d) ? 0 : -1;
}
