/* idx.c — reads IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed, through zlib's gz* API,
 * which passes uncompressed files through unchanged. The stance: the file is untrusted input. Nothing
 * the header claims is believed until checked (magic, type, dimension count, no zero dimension, at most
 * 2^32 data bytes), the data buffer grows only as bytes actually arrive, and the file must end exactly
 * where the header says. Every failure becomes one user diagnostic that names the byte offset in the
 * uncompressed stream and what was expected there; the reader never exits or aborts on bad input. */
#include "runtime/idx.h"
#include "ir/input.h"
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum {
  IDX_TYPE_UBYTE = 0x08,
  MAX_DIMS = 4,
  GZ_BUFFER = 128 * 1024,   /* zlib's input buffer; its default 8 KB costs speed */
  MAX_READ = 1 << 30,       /* gzread takes an unsigned and returns an int */
};
#define DATA_LIMIT ((uint64_t)1 << 32)     /* refuse headers claiming more data bytes than this */
#define FIRST_ALLOC ((size_t)64 << 20)     /* grow past this only as data actually arrives */

/* An open stream and the uncompressed offset reached so far. */
typedef struct reader {
  gzFile gz;
  const char *path;
  gr_diag *d;
  uint64_t pos;
} reader;

/* zlib's gzerror text is "<fd:N>: message" for a gzdopen'ed stream; the diagnostic names the file already. */
static const char *zlib_message(gzFile gz, int *errnum) {
  const char *msg = gzerror(gz, errnum);
  if (!msg) return "unknown error";
  if (strncmp(msg, "<fd:", 4) == 0) {
    const char *colon = strstr(msg, ": ");
    if (colon) msg = colon + 2;
  }
  return msg;
}

/* Reports the error zlib recorded after a failed or short read. Returns 1 if there was one. */
static int report_stream_error(reader *r) {
  int errnum = Z_OK;
  const char *msg = zlib_message(r->gz, &errnum);
  if (errnum == Z_OK) return 0;
  /* zlib's own position is where the failing chunk of decompression began */
  z_off_t at = gztell(r->gz);
  uint64_t off = at >= 0 && (uint64_t)at > r->pos ? (uint64_t)at : r->pos;
  gr_loc l = gr_loc_file(r->path);
  switch (errnum) {
  case Z_ERRNO:
    gr_error(r->d, l, "read error after offset %" PRIu64 ": %s", off, msg); /* zlib's strerror text */
    break;
  case Z_BUF_ERROR:
    gr_error(r->d, l,
             "truncated gzip stream: compressed data ends at offset %" PRIu64
             " of the uncompressed stream (zlib: %s)", off, msg);
    break;
  case Z_MEM_ERROR:
    gr_error(r->d, l, "out of memory while decompressing at offset %" PRIu64, off);
    break;
  default:
    gr_error(r->d, l,
             "corrupt gzip data after offset %" PRIu64 " of the uncompressed stream: %s "
             "(expected a well-formed gzip stream)", off, msg);
    break;
  }
  return 1;
}

/* Reads up to `want` bytes into buf, stopping early only at end of file. *got receives the count.
 * Returns -1 (after reporting) on a read or decompression error, including a gzip stream cut short. */
static int read_full(reader *r, void *buf, size_t want, size_t *got) {
  size_t have = 0;
  while (have < want) {
    size_t n = want - have < MAX_READ ? want - have : MAX_READ;
    int k = gzread(r->gz, (unsigned char *)buf + have, (unsigned)n);
    if (k < 0) {
      if (!report_stream_error(r))
        gr_error(r->d, gr_loc_file(r->path), "read error after offset %" PRIu64, r->pos);
      return -1;
    }
    GR_ASSERT((size_t)k <= n);
    have += (size_t)k;
    r->pos += (uint64_t)k;
    if (k == 0) break;
  }
  *got = have;
  /* a short read is end of file, unless the compressed stream itself ended early */
  if (have < want && report_stream_error(r)) return -1;
  return 0;
}

static const char *type_name(unsigned t) {
  switch (t) {
  case 0x08: return "unsigned byte";
  case 0x09: return "signed byte";
  case 0x0B: return "16-bit integer";
  case 0x0C: return "32-bit integer";
  case 0x0D: return "32-bit float";
  case 0x0E: return "64-bit float";
  default: return NULL;
  }
}

/* Validates the header and fills ndim, dims and nbytes. Returns -1 after reporting. */
static int read_header(reader *r, gr_idx *x, size_t *header_len) {
  gr_loc l = gr_loc_file(r->path);
  unsigned char h[4 + 4 * MAX_DIMS];
  size_t got;
  if (read_full(r, h, 4, &got)) return -1;
  if ((got >= 1 && h[0] != 0) || (got >= 2 && h[1] != 0)) {
    if (got >= 2)
      gr_error(r->d, l, "not an IDX file: bad magic bytes at offset 0 (expected 00 00, found %02x %02x)",
               h[0], h[1]);
    else
      gr_error(r->d, l, "not an IDX file: bad magic byte at offset 0 (expected 00 00, found %02x)", h[0]);
    return -1;
  }
  if (got >= 3 && h[2] != IDX_TYPE_UBYTE) {
    const char *name = type_name(h[2]);
    if (name)
      gr_error(r->d, l,
               "unsupported IDX element type 0x%02X (%s) at offset 2 (graft reads unsigned bytes, type 0x08)",
               h[2], name);
    else
      gr_error(r->d, l, "not an IDX file: unknown element type 0x%02X at offset 2 (expected 0x08, unsigned byte)",
               h[2]);
    return -1;
  }
  if (got >= 4 && (h[3] < 1 || h[3] > MAX_DIMS)) {
    gr_error(r->d, l, "unsupported dimension count %u at offset 3 (graft reads 1 to %d dimensions)", h[3],
             MAX_DIMS);
    return -1;
  }
  if (got < 4) {
    gr_error(r->d, l,
             "truncated header: expected at least 8 bytes (magic, type, dimension count, sizes), "
             "file ends at offset %zu", got);
    return -1;
  }
  int ndim = h[3];
  size_t hlen = 4 + 4 * (size_t)ndim;
  if (read_full(r, h + 4, hlen - 4, &got)) return -1;
  if (got < hlen - 4) {
    gr_error(r->d, l, "truncated header: expected %zu bytes for %d dimension%s, file ends at offset %zu", hlen,
             ndim, ndim == 1 ? "" : "s", 4 + got);
    return -1;
  }
  uint64_t total = 1;
  int too_big = 0;
  for (int i = 0; i < ndim; i++) {
    const unsigned char *p = h + 4 + 4 * i;
    uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
    if (v == 0) {
      gr_error(r->d, l, "zero dimension: size %d of %d at offset %d is 0 (expected at least 1)", i + 1, ndim,
               4 + 4 * i);
      return -1;
    }
    x->dims[i] = v;
    /* total <= 2^32 before the multiply, so the product fits in 64 bits */
    if (!too_big) {
      total *= v;
      too_big = total > DATA_LIMIT;
    }
  }
#if SIZE_MAX < UINT64_MAX
  if (total > SIZE_MAX) too_big = 1;
#endif
  if (too_big) {
    char shape[80];
    int n = 0;
    for (int i = 0; i < ndim; i++)
      n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, i ? " x " : "", x->dims[i]);
    gr_error(r->d, l,
             "header at offset 4 claims %s = more than %" PRIu64 " data bytes (graft refuses files over 2^32 bytes)",
             shape, DATA_LIMIT);
    return -1;
  }
  x->ndim = ndim;
  x->nbytes = (size_t)total;
  *header_len = hlen;
  return 0;
}

static void report_truncated_data(reader *r, size_t hlen, size_t nbytes, uint64_t have) {
  gr_error(r->d, gr_loc_file(r->path),
           "truncated data: header at offset 0 promises %zu bytes after offset %zu, file has %" PRIu64
           " (ends at offset %" PRIu64 ")", nbytes, hlen, have, (uint64_t)hlen + have);
}

/* Reads the data into x->data, growing the buffer only as bytes arrive, so that a lying header cannot
 * make a small file allocate gigabytes. Returns -1 after reporting. */
static int read_data(reader *r, gr_idx *x, size_t hlen, const struct stat *st) {
  size_t nbytes = x->nbytes;
  /* an uncompressed regular file: its size tells up front whether the data is all there */
  if (S_ISREG(st->st_mode) && gzdirect(r->gz) == 1 && (uint64_t)st->st_size < (uint64_t)hlen + nbytes) {
    uint64_t have = (uint64_t)st->st_size > hlen ? (uint64_t)st->st_size - hlen : 0;
    report_truncated_data(r, hlen, nbytes, have);
    return -1;
  }
  size_t cap = nbytes < FIRST_ALLOC ? nbytes : FIRST_ALLOC, have = 0;
  uint8_t *data = malloc(cap);
  for (;;) {
    if (!data) {
      gr_error(r->d, gr_loc_file(r->path),
               "out of memory: cannot allocate %zu bytes for the data after offset %zu", cap, hlen);
      return -1;
    }
    size_t got;
    if (read_full(r, data + have, cap - have, &got)) {
      free(data);
      return -1;
    }
    have += got;
    if (have < cap || cap == nbytes) break;
    cap = cap > nbytes / 2 ? nbytes : cap * 2;
    uint8_t *grown = realloc(data, cap);
    if (!grown) free(data);
    data = grown;
  }
  if (have < nbytes) {
    free(data);
    report_truncated_data(r, hlen, nbytes, have);
    return -1;
  }
  x->data = data;
  return 0;
}

/* The file must end where the data does. Counts what follows, for the message. */
static int check_end(reader *r, size_t hlen, size_t nbytes) {
  unsigned char buf[16384];
  uint64_t end = r->pos, extra = 0;
  size_t got;
  do {
    if (read_full(r, buf, sizeof buf, &got)) return -1;
    extra += got;
  } while (got == sizeof buf);
  if (extra) {
    gr_error(r->d, gr_loc_file(r->path),
             "trailing data: %" PRIu64 " byte%s after the end of the data at offset %" PRIu64
             " (header promises %zu bytes after offset %zu)", extra, extra == 1 ? "" : "s", end, nbytes, hlen);
    return -1;
  }
  return 0;
}

int gr_idx_read(const char *path, gr_idx *out, gr_diag *d) {
  GR_ASSERT(path && out && d);
  memset(out, 0, sizeof *out);
  gr_loc l = gr_loc_file(path);
  struct stat st;
  int fd = gr_open_input(d, path, (gr_loc){0}, NULL, &st);
  if (fd < 0) return -1;
  gzFile gz = gzdopen(fd, "rb");
  if (!gz) {
    gr_error(d, l, "cannot open: out of memory");
    close(fd);
    return -1;
  }
  gzbuffer(gz, GZ_BUFFER);
  reader r = {gz, path, d, 0};
  gr_idx x = {0};
  size_t hlen = 0;
  int rc = -1;
  if (read_header(&r, &x, &hlen) == 0 && read_data(&r, &x, hlen, &st) == 0) {
    if (check_end(&r, hlen, x.nbytes) == 0)
      rc = 0;
    else
      gr_idx_free(&x);
  }
  gzclose_r(gz); /* closes fd too */
  if (rc == 0) *out = x;
  return rc;
}

void gr_idx_free(gr_idx *x) {
  if (!x) return;
  free(x->data);
  memset(x, 0, sizeof *x);
}
