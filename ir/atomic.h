/* atomic.h — files written whole or not at all: the bytes go to "<path>.tmp.<pid>.<n>" (created
 * exclusively, n counting this process's writes), which is synced,
 * closed and renamed over path, and then the directory is synced, so that a crash or an error at any
 * point leaves the old file (or none) in place, never a partial one. Used for weights, checkpoints,
 * kernel cache entries and graft compile's outputs; and the directories they go in. */
#ifndef GRAFT_ATOMIC_H
#define GRAFT_ATOMIC_H
#include <stdbool.h>
#include <stddef.h>
#include "ir/diag.h"

typedef struct gr_atomic_file {
  const char *path;
  char *tmp;
  int fd;
  int err; /* the first write error (errno), 0 if none */
} gr_atomic_file;

/* Creates the temporary file; false after reporting that it cannot. */
bool gr_atomic_begin(gr_atomic_file *f, const char *path, gr_diag *d);
/* Appends n bytes (nothing once a write has failed: commit reports it). */
void gr_atomic_write(gr_atomic_file *f, const void *data, size_t n);
/* Syncs, closes and renames the temporary file over path (calling before_rename, if not NULL, just
 * before the rename: a test hook), then syncs the directory. False after reporting what failed; the
 * temporary file is gone either way. */
bool gr_atomic_commit(gr_atomic_file *f, void (*before_rename)(void), gr_diag *d);
/* Gives up: closes and removes the temporary file. */
void gr_atomic_abort(gr_atomic_file *f);
/* The whole of a file at once: begin, write, commit. */
bool gr_atomic_write_file(const char *path, const void *data, size_t n, gr_diag *d);

/* mkdir -p: dir and its missing parents, each created with mode (an existing directory is fine);
 * false with errno set. */
bool gr_make_dirs(const char *dir, unsigned mode);

#endif
