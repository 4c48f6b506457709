/* archive.h — writes static libraries (ar archives) from object files held in memory, so that graft can
 * emit `libfoo.a` without running the `ar` program. */
#ifndef GRAFT_ARCHIVE_H
#define GRAFT_ARCHIVE_H
#include <stdbool.h>
#include <stddef.h>
#include "ir/diag.h"

typedef struct gr_ar_member {
  const char *name;                /* file name in the archive: no '/', not empty */
  const void *data;
  size_t size;
  const char *const *symbols;      /* the global symbols the member defines, for the index */
  int n_symbols;
} gr_ar_member;

/* Writes a System V/GNU ar archive with a symbol index ("/" member) listing each member's global symbols,
 * so that ld links from it without ranlib; atomically (a temporary file in the same directory, fsync,
 * rename). Timestamps, owners and modes are fixed, so the same members give the same bytes. False after
 * reporting through d; no temporary file is left behind. */
bool gr_write_archive(const char *path, const gr_ar_member *members, int n, gr_diag *d);

#endif
