/* idx.h — reader for IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
 *
 * An IDX file is a header (magic 00 00, an element-type byte, a dimension count, then one big-endian
 * 32-bit size per dimension) followed by the elements in row-major order. graft reads only unsigned
 * bytes (type 0x08), with 1 to 4 dimensions. Errors are reported against the whole file and name the
 * byte offset within the uncompressed stream. */
#ifndef GRAFT_IDX_H
#define GRAFT_IDX_H
#include <stddef.h>
#include <stdint.h>
#include "ir/diag.h"
typedef struct gr_idx {
  int ndim;            /* 1..4 */
  int64_t dims[4];     /* dims[0] = number of items */
  uint8_t *data;       /* malloc'd, row-major, unsigned bytes (IDX type 0x08) */
  size_t nbytes;       /* product of dims */
} gr_idx;
/* Reads `path`. Returns 0 on success; otherwise reports one error through gr_error(d, gr_loc_file(path), ...)
 * and returns -1 with *out zeroed (nothing to free). */
int gr_idx_read(const char *path, gr_idx *out, gr_diag *d);
/* Frees x->data and zeroes *x. Safe on a zeroed struct and on NULL. */
void gr_idx_free(gr_idx *x);
#endif
