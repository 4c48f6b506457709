/* test_idx.c — cmocka tests for the IDX reader (runtime/idx.c). The stance: every rejection is a user
 * error and must say where and why, so each bad-file case checks the return value, that *out is left
 * zeroed, that exactly one error was reported against the file's path, and that the message carries the
 * expected key words (usually "offset"). Files are written into a fresh mkdtemp directory, both plain and
 * through zlib's gzopen("wb"); the real Fashion-MNIST files are read too when the machine has them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "runtime/idx.h"
#include "tests/diag_capture.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist/"

static char tmpdir[64];

static int group_setup(void **state) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/graft-test-idx-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state) {
  DIR *dir = opendir(tmpdir);
  if (dir) {
    struct dirent *e;
    char p[512];
    while ((e = readdir(dir)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
      if (unlink(p) != 0) rmdir(p);
    }
    closedir(dir);
  }
  return rmdir(tmpdir);
}

static void tmp_path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

/* Writes `len` bytes to tmpdir/name, through gzip when gz is set; returns the path in buf. */
static void write_file(char *buf, size_t n, const char *name, const void *bytes, size_t len, int gz) {
  tmp_path(buf, n, name);
  if (gz) {
    gzFile f = gzopen(buf, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(gzwrite(f, bytes, (unsigned)len), (int)len);
    assert_int_equal(gzclose(f), Z_OK);
  } else {
    FILE *f = fopen(buf, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(fwrite(bytes, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
  }
}

/* Builds an IDX image in buf: header for dims[0..ndim-1], then `ndata` bytes of a known pattern. */
static size_t make_idx(uint8_t *buf, uint8_t type, int ndim, const uint32_t *dims, size_t ndata) {
  size_t n = 0;
  buf[n++] = 0;
  buf[n++] = 0;
  buf[n++] = type;
  buf[n++] = (uint8_t)ndim;
  for (int i = 0; i < ndim; i++) {
    buf[n++] = (uint8_t)(dims[i] >> 24);
    buf[n++] = (uint8_t)(dims[i] >> 16);
    buf[n++] = (uint8_t)(dims[i] >> 8);
    buf[n++] = (uint8_t)dims[i];
  }
  for (size_t i = 0; i < ndata; i++) buf[n++] = (uint8_t)(i * 7 + 3);
  return n;
}

/* Reads `path`, expects failure with one error on `path` whose message holds every word in `words`. */
static void expect_error(const char *path, const char *const *words) {
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  gr_idx x;
  memset(&x, 0xAB, sizeof x);
  int rc = gr_idx_read(path, &x, &d);
  print_message("  %s: %s\n", path, c.msg);
  assert_int_equal(rc, -1);
  assert_int_equal(c.count, 1);
  assert_int_equal(d.n_errors, 1);
  assert_int_equal(c.kind, GR_DIAG_ERROR);
  assert_string_equal(c.file, path);
  for (const char *const *w = words; *w; w++) {
    if (!strstr(c.msg, *w)) fail_msg("message \"%s\" lacks \"%s\"", c.msg, *w);
  }
  /* *out zeroed: nothing to free */
  gr_idx zero;
  memset(&zero, 0, sizeof zero);
  assert_memory_equal(&x, &zero, sizeof x);
  gr_idx_free(&x);
  gr_diag_free(&d);
}

#define WORDS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- good files ---- */

static void check_good_3d(int gz) {
  static const uint32_t dims[3] = {3, 4, 5};
  uint8_t buf[16 + 60];
  size_t n = make_idx(buf, 0x08, 3, dims, 60);
  assert_int_equal(n, sizeof buf);
  char path[256];
  write_file(path, sizeof path, gz ? "good3d.idx.gz" : "good3d.idx", buf, n, gz);
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  gr_idx x;
  assert_int_equal(gr_idx_read(path, &x, &d), 0);
  assert_int_equal(c.count, 0);
  assert_int_equal(x.ndim, 3);
  assert_int_equal(x.dims[0], 3);
  assert_int_equal(x.dims[1], 4);
  assert_int_equal(x.dims[2], 5);
  assert_int_equal(x.nbytes, 60);
  assert_non_null(x.data);
  assert_memory_equal(x.data, buf + 16, 60);
  gr_idx_free(&x);
  assert_null(x.data);
  assert_int_equal(x.ndim, 0);
  gr_diag_free(&d);
}

static void test_good_3d_plain(void **state) { check_good_3d(0); }
static void test_good_3d_gz(void **state) { check_good_3d(1); }

static void test_labels_1d(void **state) {
  static const uint32_t dims[1] = {10};
  uint8_t buf[8 + 10];
  size_t n = make_idx(buf, 0x08, 1, dims, 10);
  for (int gz = 0; gz <= 1; gz++) {
    char path[256];
    write_file(path, sizeof path, gz ? "labels.idx.gz" : "labels.idx", buf, n, gz);
    gr_diag d;
    captured c;
    diag_capture(&d, &c);
    gr_idx x;
    assert_int_equal(gr_idx_read(path, &x, &d), 0);
    assert_int_equal(c.count, 0);
    assert_int_equal(x.ndim, 1);
    assert_int_equal(x.dims[0], 10);
    assert_int_equal(x.nbytes, 10);
    assert_memory_equal(x.data, buf + 8, 10);
    gr_idx_free(&x);
    gr_diag_free(&d);
  }
}

static void test_four_dims(void **state) {
  static const uint32_t dims[4] = {2, 1, 3, 2};
  uint8_t buf[20 + 12];
  size_t n = make_idx(buf, 0x08, 4, dims, 12);
  char path[256];
  write_file(path, sizeof path, "four.idx", buf, n, 0);
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  gr_idx x;
  assert_int_equal(gr_idx_read(path, &x, &d), 0);
  assert_int_equal(x.ndim, 4);
  assert_int_equal(x.dims[3], 2);
  assert_int_equal(x.nbytes, 12);
  assert_memory_equal(x.data, buf + 20, 12);
  gr_idx_free(&x);
  gr_diag_free(&d);
}

/* ---- bad files, each plain and gzipped ---- */

static void test_truncated_header(void **state) {
  static const uint32_t dims[3] = {3, 4, 5};
  uint8_t buf[16 + 60];
  make_idx(buf, 0x08, 3, dims, 60);
  for (int gz = 0; gz <= 1; gz++) {
    char path[256];
    write_file(path, sizeof path, gz ? "trunchdr.idx.gz" : "trunchdr.idx", buf, 9, gz);
    expect_error(path, WORDS("truncated header", "offset 9", "16"));
    write_file(path, sizeof path, gz ? "trunchdr2.idx.gz" : "trunchdr2.idx", buf, 3, gz);
    expect_error(path, WORDS("truncated header", "offset 3"));
    write_file(path, sizeof path, gz ? "empty.idx.gz" : "empty.idx", buf, 0, gz);
    expect_error(path, WORDS("truncated header", "offset 0"));
  }
}

static void test_truncated_data(void **state) {
  static const uint32_t dims[3] = {3, 4, 5};
  uint8_t buf[16 + 60];
  make_idx(buf, 0x08, 3, dims, 60);
  for (int gz = 0; gz <= 1; gz++) {
    char path[256];
    write_file(path, sizeof path, gz ? "truncdata.idx.gz" : "truncdata.idx", buf, 16 + 25, gz);
    expect_error(path, WORDS("truncated data", "offset 0", "promises 60 bytes after offset 16", "file has 25"));
  }
}

static void test_huge_claim_small_file(void **state) {
  /* exactly 2^32 bytes is allowed by the limit, but the file is tiny: no giant allocation, a clear error */
  static const uint32_t dims[2] = {65536, 65536};
  uint8_t buf[12 + 100];
  size_t n = make_idx(buf, 0x08, 2, dims, 100);
  for (int gz = 0; gz <= 1; gz++) {
    char path[256];
    write_file(path, sizeof path, gz ? "huge.idx.gz" : "huge.idx", buf, n, gz);
    expect_error(path, WORDS("truncated data", "offset", "4294967296", "file has 100"));
  }
}

static void test_too_large(void **state) {
  static const uint32_t dims[3] = {65536, 65536, 2};
  uint8_t buf[16];
  size_t n = make_idx(buf, 0x08, 3, dims, 0);
  char path[256];
  write_file(path, sizeof path, "toolarge.idx", buf, n, 0);
  expect_error(path, WORDS("offset 4", "2^32", "65536 x 65536 x 2"));
  static const uint32_t big[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}; /* product overflows */
  uint8_t buf4[20];
  n = make_idx(buf4, 0x08, 4, big, 0);
  write_file(path, sizeof path, "overflow.idx", buf4, n, 0);
  expect_error(path, WORDS("offset 4", "2^32"));
}

static void test_trailing(void **state) {
  static const uint32_t dims[3] = {3, 4, 5};
  uint8_t buf[16 + 72];
  size_t n = make_idx(buf, 0x08, 3, dims, 72); /* 12 bytes too many */
  for (int gz = 0; gz <= 1; gz++) {
    char path[256];
    write_file(path, sizeof path, gz ? "trailing.idx.gz" : "trailing.idx", buf, n, gz);
    expect_error(path, WORDS("trailing data", "12 bytes", "offset 76"));
  }
}

static void test_bad_magic(void **state) {
  static const uint32_t dims[1] = {4};
  uint8_t buf[8 + 4];
  size_t n = make_idx(buf, 0x08, 1, dims, 4);
  buf[1] = 0x01;
  for (int gz = 0; gz <= 1; gz++) {
    char path[256];
    write_file(path, sizeof path, gz ? "magic.idx.gz" : "magic.idx", buf, n, gz);
    expect_error(path, WORDS("not an IDX file", "magic", "offset 0", "00 00"));
  }
  char path[256];
  write_file(path, sizeof path, "text.idx", "hello, world\n", 13, 0);
  expect_error(path, WORDS("not an IDX file", "offset 0", "68 65"));
}

static void test_unsupported_type(void **state) {
  static const uint32_t dims[1] = {4};
  uint8_t buf[8 + 16];
  size_t n = make_idx(buf, 0x0D, 1, dims, 16);
  for (int gz = 0; gz <= 1; gz++) {
    char path[256];
    write_file(path, sizeof path, gz ? "float.idx.gz" : "float.idx", buf, n, gz);
    expect_error(path, WORDS("unsupported IDX element type 0x0D", "offset 2", "0x08"));
  }
  char path[256];
  n = make_idx(buf, 0x42, 1, dims, 4);
  write_file(path, sizeof path, "type42.idx", buf, n, 0);
  expect_error(path, WORDS("0x42", "offset 2", "0x08"));
}

static void test_bad_ndim(void **state) {
  static const uint32_t dims[5] = {1, 1, 1, 1, 1};
  uint8_t buf[24 + 1];
  size_t n = make_idx(buf, 0x08, 5, dims, 1);
  char path[256];
  write_file(path, sizeof path, "ndim5.idx", buf, n, 0);
  expect_error(path, WORDS("dimension count 5", "offset 3", "1 to 4"));
  n = make_idx(buf, 0x08, 0, dims, 1);
  write_file(path, sizeof path, "ndim0.idx", buf, n, 0);
  expect_error(path, WORDS("dimension count 0", "offset 3"));
}

static void test_zero_dim(void **state) {
  static const uint32_t dims[3] = {3, 0, 5};
  uint8_t buf[16];
  size_t n = make_idx(buf, 0x08, 3, dims, 0);
  for (int gz = 0; gz <= 1; gz++) {
    char path[256];
    write_file(path, sizeof path, gz ? "zerodim.idx.gz" : "zerodim.idx", buf, n, gz);
    expect_error(path, WORDS("zero dimension", "offset 8", "at least 1"));
  }
}

static void test_missing_file(void **state) {
  char path[256];
  tmp_path(path, sizeof path, "does-not-exist.idx.gz");
  expect_error(path, WORDS("cannot open", "No such file or directory"));
  tmp_path(path, sizeof path, "subdir");
  assert_int_equal(mkdir(path, 0700), 0);
  expect_error(path, WORDS("cannot open", "Is a directory"));
}

static void test_corrupt_gz(void **state) {
  /* a valid gzip member header (magic, deflate, no flags, mtime 0, xfl 0, os unix), then garbage:
   * 0xFF starts a final block of the reserved type 3 */
  uint8_t buf[10 + 64];
  static const uint8_t hdr[10] = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03};
  memcpy(buf, hdr, sizeof hdr);
  memset(buf + 10, 0xFF, 64);
  char path[256];
  write_file(path, sizeof path, "corrupt.idx.gz", buf, sizeof buf, 0);
  expect_error(path, WORDS("corrupt gzip data", "offset 0", "invalid block type"));
}

static void test_bad_crc_gz(void **state) {
  /* the data decompresses fine but the gzip trailer's CRC is wrong. zlib decompresses ahead of the
   * reader, so for a small file the error surfaces on the first read and the offset is a lower bound. */
  static const uint32_t dims[2] = {20, 20};
  uint8_t buf[12 + 400];
  size_t n = make_idx(buf, 0x08, 2, dims, 400);
  char path[256];
  write_file(path, sizeof path, "badcrc.idx.gz", buf, n, 1);
  FILE *f = fopen(path, "r+b");
  assert_non_null(f);
  assert_int_equal(fseek(f, -8, SEEK_END), 0); /* CRC32 is the first trailer word */
  int ch = fgetc(f);
  assert_int_equal(fseek(f, -8, SEEK_END), 0);
  fputc(ch ^ 0x55, f);
  assert_int_equal(fclose(f), 0);
  expect_error(path, WORDS("corrupt gzip data", "offset", "incorrect data check"));
}

static void test_truncated_gz(void **state) {
  /* a gzip stream cut in the middle: the compressed data ends early */
  enum { N = 4000 };
  static const uint32_t dims[1] = {N};
  static uint8_t buf[8 + N];
  size_t n = make_idx(buf, 0x08, 1, dims, N);
  srand(42);
  for (size_t i = 8; i < n; i++) buf[i] = (uint8_t)rand(); /* incompressible */
  char path[256];
  write_file(path, sizeof path, "cut.idx.gz", buf, n, 1);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(truncate(path, st.st_size / 2), 0);
  expect_error(path, WORDS("truncated gzip stream", "offset"));
}

/* ---- the real data set, when present ---- */

static void test_fashion_labels(void **state) {
  const char *path = FASHION_DIR "t10k-labels-idx1-ubyte.gz";
  if (access(path, R_OK) != 0) skip();
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  gr_idx x;
  assert_int_equal(gr_idx_read(path, &x, &d), 0);
  assert_int_equal(c.count, 0);
  assert_int_equal(x.ndim, 1);
  assert_int_equal(x.dims[0], 10000);
  assert_int_equal(x.nbytes, 10000);
  int seen[10] = {0};
  for (size_t i = 0; i < x.nbytes; i++) {
    assert_true(x.data[i] < 10);
    seen[x.data[i]]++;
  }
  for (int k = 0; k < 10; k++) assert_int_equal(seen[k], 1000); /* the test set is balanced */
  gr_idx_free(&x);
  gr_diag_free(&d);
}

static void test_fashion_train_images(void **state) {
  const char *path = FASHION_DIR "train-images-idx3-ubyte.gz";
  if (access(path, R_OK) != 0) skip();
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  gr_idx x;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(gr_idx_read(path, &x, &d), 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  print_message("  read %zu bytes in %.3f s\n", x.nbytes,
                (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
  assert_int_equal(c.count, 0);
  assert_int_equal(x.ndim, 3);
  assert_int_equal(x.dims[0], 60000);
  assert_int_equal(x.dims[1], 28);
  assert_int_equal(x.dims[2], 28);
  assert_int_equal(x.nbytes, (size_t)60000 * 28 * 28);
  gr_idx_free(&x);
  gr_diag_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_3d_plain),
      cmocka_unit_test(test_good_3d_gz),
      cmocka_unit_test(test_labels_1d),
      cmocka_unit_test(test_four_dims),
      cmocka_unit_test(test_truncated_header),
      cmocka_unit_test(test_truncated_data),
      cmocka_unit_test(test_huge_claim_small_file),
      cmocka_unit_test(test_too_large),
      cmocka_unit_test(test_trailing),
      cmocka_unit_test(test_bad_magic),
      cmocka_unit_test(test_unsupported_type),
      cmocka_unit_test(test_bad_ndim),
      cmocka_unit_test(test_zero_dim),
      cmocka_unit_test(test_missing_file),
      cmocka_unit_test(test_corrupt_gz),
      cmocka_unit_test(test_bad_crc_gz),
      cmocka_unit_test(test_truncated_gz),
      cmocka_unit_test(test_fashion_labels),
      cmocka_unit_test(test_fashion_train_images),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
