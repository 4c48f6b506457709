/* atomic.c — see atomic.h. Writes go in chunks of at most 1 GiB (write(2) sizes stay well within
 * ssize_t) and retry on EINTR. A file system that cannot sync directories (EINVAL, ENOTSUP) is not an
 * error. */
#include "ir/atomic.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool gr_atomic_begin(gr_atomic_file *f, const char *path, gr_diag *d) {
  size_t n = strlen(path) + 48;
  *f = (gr_atomic_file){.path = path, .tmp = malloc(n), .fd = -1};
  if (!f->tmp) {
    gr_error(d, gr_loc_file(path), "cannot write: out of memory");
    return false;
  }
  /* a name of this process and call alone, created exclusively: threads writing the same path do not
   * share a temporary file, and a symlink planted under the name makes the open fail rather than
   * redirect the write */
  static _Atomic unsigned serial;
  snprintf(f->tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(), serial++);
  f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (f->fd < 0) {
    gr_error(d, gr_loc_file(path), "cannot create the temporary file %s: %s", f->tmp, strerror(errno));
    free(f->tmp);
    f->tmp = NULL;
    return false;
  }
  return true;
}

void gr_atomic_write(gr_atomic_file *f, const void *data, size_t n) {
  const char *p = data;
  while (n > 0 && !f->err) {
    ssize_t k = write(f->fd, p, n < (1u << 30) ? n : (1u << 30));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      f->err = k < 0 ? errno : EIO;
      break;
    }
    p += k;
    n -= (size_t)k;
  }
}

void gr_atomic_abort(gr_atomic_file *f) {
  if (f->fd >= 0) close(f->fd);
  if (f->tmp) unlink(f->tmp);
  free(f->tmp);
  f->tmp = NULL;
  f->fd = -1;
}

bool gr_atomic_commit(gr_atomic_file *f, void (*before_rename)(void), gr_diag *d) {
  gr_loc l = gr_loc_file(f->path);
  int err = f->err;
  const char *step = "write";
  if (!err && fsync(f->fd) != 0) err = errno, step = "sync";
  if (close(f->fd) != 0 && !err) err = errno, step = "close";
  f->fd = -1;
  if (!err && before_rename) before_rename();
  if (!err && rename(f->tmp, f->path) != 0) {
    gr_error(d, l, "cannot rename %s to %s: %s (the old file is unchanged)", f->tmp, f->path, strerror(errno));
    gr_atomic_abort(f);
    return false;
  }
  if (err) {
    gr_error(d, l, "cannot %s the temporary file %s: %s (the old file is unchanged)", step, f->tmp, strerror(err));
    gr_atomic_abort(f);
    return false;
  }
  free(f->tmp);
  f->tmp = NULL;
  /* make the rename itself durable: sync the directory that holds path */
  char *dir = strdup(f->path);
  if (!dir) {
    gr_error(d, l, "out of memory after writing (the file was replaced, but its directory was not synced)");
    return false;
  }
  char *slash = strrchr(dir, '/');
  const char *dname = !slash ? "." : slash == dir ? "/" : (*slash = 0, dir);
  int dfd = open(dname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  err = dfd < 0 ? errno : fsync(dfd) != 0 ? errno : 0;
  if (dfd >= 0) close(dfd);
  bool ok = !err || err == EINVAL || err == ENOTSUP;
  if (!ok)
    gr_error(d, l, "cannot sync the directory %s: %s (the file was replaced, but the rename may not survive a crash)", dname, strerror(err));
  free(dir);
  return ok;
}

bool gr_atomic_write_file(const char *path, const void *data, size_t n, gr_diag *d) {
  gr_atomic_file f;
  if (!gr_atomic_begin(&f, path, d)) return false;
  gr_atomic_write(&f, data, n);
  return gr_atomic_commit(&f, NULL, d);
}

bool gr_make_dirs(const char *dir, unsigned mode) {
  char p[4096];
  if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return errno = ENAMETOOLONG, false;
  for (char *s = p + 1;; s++) {
    bool end = !*s;
    if (*s == '/' || end) {
      *s = 0;
      if (mkdir(p, (mode_t)mode) && errno != EEXIST) return false;
      if (end) return true;
      *s = '/';
    }
  }
}
