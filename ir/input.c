/* input.c — see input.h. One place decides what "cannot open" means, so every reader reports a
 * missing file, a permission problem or a directory the same way. */
#include "ir/input.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int gr_open_input(gr_diag *d, const char *path, gr_loc from, const char *what, struct stat *out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;
  struct stat st;
  if (fd < 0)
    err = errno;
  else if (fstat(fd, &st) != 0)
    err = errno;
  else if (S_ISDIR(st.st_mode))
    err = EISDIR;
  if (!err) {
    if (out) *out = st;
    return fd;
  }
  if (fd >= 0) close(fd);
  if (from.file)
    gr_error(d, from, "cannot open %s '%s': %s", what, path, strerror(err));
  else
    gr_error(d, gr_loc_file(path), "cannot open: %s", strerror(err));
  return -1;
}
