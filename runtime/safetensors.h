/* safetensors.h — reading and writing safetensors files (https://github.com/huggingface/safetensors).
 *
 * A safetensors file is an 8-byte little-endian header length N, then N bytes of UTF-8 JSON, then the
 * data buffer. The JSON is an object mapping each tensor name to {"dtype", "shape", "data_offsets":
 * [begin, end]} (offsets relative to the start of the data buffer), plus an optional "__metadata__" object
 * of string values. The reader takes the file as untrusted input: it checks the header completely (strict
 * JSON, known keys, shapes, sizes, offsets inside the buffer, no overlaps, no unused bytes, no duplicate
 * names) before handing out a single pointer, and reports the first problem as one user diagnostic naming
 * the file, the tensor and the byte offset ("at header byte K" counts from the first byte after the length
 * field, i.e. file offset 8 + K). The writer writes F32 tensors atomically: a crash or an error leaves the
 * old file as it was. */
#ifndef GRAFT_SAFETENSORS_H
#define GRAFT_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>
#include "ir/diag.h"

/* The dtypes graft computes with. Every other dtype reads as GR_ST_OTHER with its name in dtype_name;
 * the reader still checks byte sizes for the ones whose element size it knows (see gr_st_dtype_size). */
typedef enum { GR_ST_F32, GR_ST_F64, GR_ST_I32, GR_ST_I64, GR_ST_F16, GR_ST_BF16, GR_ST_U8, GR_ST_OTHER } gr_st_dtype;

typedef struct gr_st_tensor {
  char *name;            /* malloc'd, NUL-terminated, non-empty, valid UTF-8 without NUL */
  gr_st_dtype dtype;
  char dtype_name[16];   /* as written in the file, e.g. "F16" (letters, digits and '_', 1 to 15 of them) */
  int rank;              /* 0..8; 0 is a scalar with one element */
  int64_t shape[8];      /* shape[0..rank-1], each >= 0 */
  const uint8_t *data;   /* points into the file's data (owned by gr_st_file); little-endian, and not
                            necessarily aligned for the element type: copy out with memcpy */
  int64_t nbytes;        /* end - begin; equals elements x element size when the dtype's size is known */
} gr_st_tensor;

typedef struct gr_st_file {
  char *path;
  uint8_t *buf; size_t size;   /* the whole file, read into memory (not mmap'd: a file truncated under a
                                  mapping would raise SIGBUS in the caller) */
  int n; gr_st_tensor *tensors; /* in header order */
  char *metadata_json;         /* raw text of the "__metadata__" object, or NULL (absent or null) */
} gr_st_file;

/* Reads and validates the whole file at `path`. Returns 0 on success; otherwise reports one error through
 * gr_error(d, gr_loc_file(path), ...) and returns -1 with *f zeroed (nothing to close). */
int gr_st_open(const char *path, gr_st_file *f, gr_diag *d);
/* Frees everything *f owns and zeroes it. Safe on a zeroed struct and on NULL. */
void gr_st_close(gr_st_file *f);
/* The tensor called `name`, or NULL. A linear scan: look tensors up once, not per training step. */
const gr_st_tensor *gr_st_find(const gr_st_file *f, const char *name);
/* Bytes per element of a dtype name as the format spells it ("F32" -> 4, "BF16" -> 2, "BOOL" -> 1), or 0
 * for names whose size graft does not know (sub-byte types such as "F4", and unknown names). */
int gr_st_dtype_size(const char *dtype_name);

/* Writing: tensors are all F32 here. Written atomically: to "<path>.tmp.<pid>", fsync'd, renamed over path,
 * then the directory fsync'd; on any failure before the rename the temp file is removed, the old file at
 * path is untouched, and one error is reported. (If only the final directory fsync fails, the new file is
 * already in place; the error says so.) Header keys are written in the given order, "__metadata__" first;
 * data offsets are contiguous in that order; the header is padded with spaces to a multiple of 8 bytes (as
 * the reference implementation does), so the data starts 8-byte aligned in the file. Names must be
 * non-empty, distinct, valid UTF-8 and not "__metadata__"; metadata_json must be NULL, "null" (both: no
 * metadata) or a JSON object whose values are strings, written verbatim (surrounding whitespace dropped) so
 * that it reads back as the same text. Nothing is written unless every check passes. Returns 0 or -1. */
typedef struct gr_st_out { const char *name; int rank; const int64_t *shape; const float *data; } gr_st_out;
int gr_st_write(const char *path, const gr_st_out *t, int n, const char *metadata_json, gr_diag *d);
#endif
