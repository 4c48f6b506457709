/* archive.c — the System V/GNU ar format, as GNU ar writes it in deterministic mode (`ar rcsD`):
 *
 *   "!<arch>\n", then members, each a 60-byte header and its data padded to an even size with '\n'.
 *   Header: name 16, mtime 12, uid 6, gid 6, mode 8 (octal), size 10 (decimal), "`\n"; space-padded.
 *   "/"  — the symbol index: big-endian uint32 count, then a big-endian uint32 offset per symbol (of the
 *          header of the member defining it), then the symbol names, NUL-terminated.
 *   "//" — names longer than 15 characters, each ending "/\n"; such a member is named "/<offset>".
 *   Other members are named "name/" (the slash allows names with spaces).
 *
 * The layout is computed before anything is written: the index holds offsets of headers that follow it.
 * mtime, uid and gid are 0 and the mode 644, so an archive depends only on its members. The index has
 * 32-bit offsets, so archives are limited to 4 GiB (GNU's "/SYM64/" variant is not written). */
#include "compiler/archive.h"
#include "ir/atomic.h"
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { HDR = 60, SHORT_NAME = 15 };

static uint64_t even(uint64_t n) { return n + (n & 1); }

/* One header; size is checked by the caller to fit 10 digits. The special members leave fields blank,
 * as GNU ar does. */
static void write_header(gr_atomic_file *f, const char *name, const char *mode, uint64_t size) {
  char h[HDR + 32]; /* room for what snprintf cannot know: size has at most 10 digits (checked in layout) */
  const char *z = *mode ? "0" : "";
  snprintf(h, sizeof h, "%-16s%-12s%-6s%-6s%-8s%-10llu`\n", name, z, z, z, mode, (unsigned long long)size);
  gr_atomic_write(f, h, HDR);
}

/* Data, then the '\n' that makes its size even. */
static void write_padded(gr_atomic_file *f, const void *data, uint64_t size) {
  gr_atomic_write(f, data, (size_t)size);
  if (size & 1) gr_atomic_write(f, "\n", 1);
}

static void put32(char *p, uint32_t v) {
  p[0] = (char)(v >> 24), p[1] = (char)(v >> 16), p[2] = (char)(v >> 8), p[3] = (char)v;
}

/* Checks what the format cannot represent; lays out the index and the long-name table. */
static bool layout(const char *path, const gr_ar_member *m, int n, uint64_t *sym_size, uint64_t *long_size,
                   uint64_t *n_syms, gr_diag *d) {
  gr_loc l = gr_loc_file(path);
  *sym_size = 4, *long_size = 0, *n_syms = 0;
  for (int i = 0; i < n; i++) {
    const char *name = m[i].name;
    if (!name || !*name || strpbrk(name, "/\n")) {
      gr_error(d, l, "cannot write member %d: its name '%s' is empty or has '/' or a newline", i, name ? name : "");
      return false;
    }
    if (m[i].size && !m[i].data) {
      gr_error(d, l, "cannot write member '%s': %zu bytes but no data", name, m[i].size);
      return false;
    }
    if (m[i].n_symbols < 0 || (m[i].n_symbols > 0 && !m[i].symbols)) {
      gr_error(d, l, "cannot write member '%s': %d symbols but no array of them", name, m[i].n_symbols);
      return false;
    }
    for (int k = 0; k < m[i].n_symbols; k++) {
      if (!m[i].symbols[k] || !*m[i].symbols[k]) {
        gr_error(d, l, "cannot write member '%s': its symbol %d is empty", name, k);
        return false;
      }
      *sym_size += 4 + strlen(m[i].symbols[k]) + 1;
      ++*n_syms; /* below 2^32 if the index fits in 4 GiB: each entry takes at least 6 bytes */
    }
    if (strlen(name) > SHORT_NAME) *long_size += strlen(name) + 2;
  }
  /* the index's offsets are 32-bit: every member header must start below 4 GiB */
  uint64_t at = 8 + HDR + even(*sym_size) + (*long_size ? HDR + even(*long_size) : 0), last = at;
  for (int i = 0; i < n; i++) {
    if (m[i].size > 9999999999u) {
      gr_error(d, l, "cannot write member '%s': %zu bytes is more than an ar header can hold", m[i].name, m[i].size);
      return false;
    }
    last = at;
    at += HDR + even(m[i].size);
  }
  if (*sym_size > 9999999999u || last > UINT32_MAX) {
    gr_error(d, l, "cannot write: members would start past 4 GiB, which the 32-bit symbol index cannot address");
    return false;
  }
  return true;
}

/* Writes the whole archive to f; ENOMEM or 0 (write errors stay in f). */
static int write_members(gr_atomic_file *f, const gr_ar_member *m, int n, uint64_t sym_size, uint64_t long_size, uint64_t n_syms) {
  char *sym = malloc((size_t)sym_size), *lng = malloc((size_t)long_size + 1);
  char (*hname)[17] = malloc((size_t)n * sizeof *hname + 1); /* each member's name as its header says it */
  if (!sym || !lng || !hname) {
    free(sym);
    free(lng);
    free(hname);
    return ENOMEM;
  }
  size_t lp = 0; /* the long-name table */
  for (int i = 0; i < n; i++) {
    size_t len = strlen(m[i].name);
    if (len > SHORT_NAME) {
      snprintf(hname[i], sizeof hname[i], "/%zu", lp);
      memcpy(lng + lp, m[i].name, len);
      memcpy(lng + lp + len, "/\n", 2);
      lp += len + 2;
    } else {
      snprintf(hname[i], sizeof hname[i], "%s/", m[i].name);
    }
  }
  /* the index: offsets first, names after them */
  put32(sym, (uint32_t)n_syms);
  char *off = sym + 4, *str = sym + 4 + 4 * (size_t)n_syms;
  uint64_t at = 8 + HDR + even(sym_size) + (long_size ? HDR + even(long_size) : 0);
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < m[i].n_symbols; k++) {
      size_t len = strlen(m[i].symbols[k]) + 1;
      put32(off, (uint32_t)at), off += 4;
      memcpy(str, m[i].symbols[k], len), str += len;
    }
    at += HDR + even(m[i].size);
  }

  gr_atomic_write(f, "!<arch>\n", 8);
  write_header(f, "/", "0", sym_size);
  write_padded(f, sym, sym_size);
  if (long_size) write_header(f, "//", "", long_size);
  if (long_size) write_padded(f, lng, long_size);
  for (int i = 0; i < n; i++) {
    write_header(f, hname[i], "644", m[i].size);
    write_padded(f, m[i].data, m[i].size);
  }
  free(hname);
  free(sym);
  free(lng);
  return 0;
}

bool gr_write_archive(const char *path, const gr_ar_member *members, int n, gr_diag *d) {
  GR_ASSERT(path && d);
  gr_loc l = gr_loc_file(path);
  if (n < 0 || (n > 0 && !members)) {
    gr_error(d, l, "cannot write: %d members%s", n, n > 0 ? " but no array of them" : "");
    return false;
  }
  uint64_t sym_size, long_size, n_syms;
  if (!layout(path, members, n, &sym_size, &long_size, &n_syms, d)) return false;

  gr_atomic_file f;
  if (!gr_atomic_begin(&f, path, d)) return false;
  if (write_members(&f, members, n, sym_size, long_size, n_syms)) {
    gr_atomic_abort(&f);
    gr_error(d, l, "cannot write: out of memory");
    return false;
  }
  return gr_atomic_commit(&f, NULL, d);
}
