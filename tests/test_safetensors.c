/* test_safetensors.c — cmocka tests for the safetensors reader and writer (runtime/safetensors.c). The
 * stance, as in test_idx.c: every rejection is a user error that must say where and why, so each bad-file
 * case checks the return value, that *f is left zeroed, that exactly one error was reported against the
 * file's path, and that the message carries the expected key words (the tensor's name where there is one,
 * and the byte offset). Bad files are built here from header text and data bytes, into a fresh mkdtemp
 * directory. A golden file written by hand from the spec (byte for byte what the reference implementation
 * writes) pins the format without depending on Python. A small mutation sweep checks, under ASan, that no
 * corrupted file crashes the reader or yields anything but one error or a clean success. */
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
#include <unistd.h>

#include "runtime/safetensors.h"
#include "tests/diag_capture.h"

static char tmpdir[64];

/* Removes everything under dir (one level of subdirectories is enough here). */
static void clear_dir(const char *dir) {
  DIR *dd = opendir(dir);
  if (!dd) return;
  struct dirent *e;
  char p[512];
  while ((e = readdir(dd)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (unlink(p) != 0) {
      clear_dir(p);
      rmdir(p);
    }
  }
  closedir(dd);
}

static int group_setup(void **state) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/graft-test-st-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state) {
  clear_dir(tmpdir);
  return rmdir(tmpdir);
}

static void tmp_path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

static void write_raw(const char *path, const void *bytes, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  if (len) assert_int_equal(fwrite(bytes, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

static uint8_t pattern(size_t i) { return (uint8_t)(i * 7 + 3); }

/* Writes tmpdir/name: `hlen` as the 8-byte little-endian length field, then hdr_len bytes of header, then
 * ndata bytes of a known pattern. Returns the path in buf. */
static void write_image(char *buf, size_t n, const char *name, uint64_t hlen, const void *hdr, size_t hdr_len,
                        size_t ndata) {
  tmp_path(buf, n, name);
  size_t total = 8 + hdr_len + ndata;
  uint8_t *img = malloc(total);
  assert_non_null(img);
  for (int i = 0; i < 8; i++) img[i] = (uint8_t)(hlen >> (8 * i));
  if (hdr_len) memcpy(img + 8, hdr, hdr_len);
  for (size_t i = 0; i < ndata; i++) img[8 + hdr_len + i] = pattern(i);
  write_raw(buf, img, total);
  free(img);
}

/* The common case: a header text with its true length, then ndata pattern bytes. */
static void write_st(char *buf, size_t n, const char *name, const char *header, size_t ndata) {
  write_image(buf, n, name, strlen(header), header, strlen(header), ndata);
}

#define WORDS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Opens `path`, expects failure with one error on `path` whose message holds every word in `words`. */
static void expect_error(const char *path, const char *const *words) {
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  gr_st_file f;
  memset(&f, 0xAB, sizeof f);
  int rc = gr_st_open(path, &f, &d);
  print_message("  %s\n", c.msg);
  assert_int_equal(rc, -1);
  assert_int_equal(c.count, 1);
  assert_int_equal(d.n_errors, 1);
  assert_int_equal(c.kind, GR_DIAG_ERROR);
  assert_string_equal(c.file, path);
  for (const char *const *w = words; *w; w++)
    if (!strstr(c.msg, *w)) fail_msg("message \"%s\" lacks \"%s\"", c.msg, *w);
  gr_st_file zero;
  memset(&zero, 0, sizeof zero);
  assert_memory_equal(&f, &zero, sizeof f); /* nothing to close */
  gr_st_close(&f);
  gr_diag_free(&d);
}

/* Builds a file from `header` and ndata pattern bytes and expects the error described by `words`. */
static void expect_header_error(const char *header, size_t ndata, const char *const *words) {
  char path[256];
  write_st(path, sizeof path, "bad.safetensors", header, ndata);
  expect_error(path, words);
}

/* Opens `path`, which must be valid. */
static void open_ok(const char *path, gr_st_file *f) {
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  int rc = gr_st_open(path, f, &d);
  if (rc != 0) fail_msg("unexpected error: %s", c.msg);
  assert_int_equal(c.count, 0);
  gr_diag_free(&d);
}

/* "at header byte K" where K is the offset of `needle` in `header`. */
static const char *at_byte(char *buf, size_t n, const char *header, const char *needle) {
  const char *hit = strstr(header, needle);
  assert_non_null(hit);
  snprintf(buf, n, "at header byte %d", (int)(hit - header));
  return buf;
}

/* One tensor entry: "name":{"dtype":"D","shape":S,"data_offsets":[B,E]} */
#define ENTRY(name, dtype, shape, b, e) \
  "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

/* ---- the golden file ----
 * safetensors' own save_file({"a": [1.0, -2.5] as float32}) writes exactly these bytes: the header length
 * 56 (0x38) as a little-endian u64; the 54-byte JSON header followed by two spaces of padding so that the
 * data starts at a multiple of 8; then 1.0f (0x3F800000) and -2.5f (0xC0200000), little-endian. */
static const uint8_t golden[72] = {
    0x38, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,                         /* N = 56 */
    0x7b, 0x22, 0x61, 0x22, 0x3a, 0x7b, 0x22, 0x64, 0x74, 0x79, 0x70, 0x65, /* {"a":{"dtype */
    0x22, 0x3a, 0x22, 0x46, 0x33, 0x32, 0x22, 0x2c, 0x22, 0x73, 0x68, 0x61, /* ":"F32","sha */
    0x70, 0x65, 0x22, 0x3a, 0x5b, 0x32, 0x5d, 0x2c, 0x22, 0x64, 0x61, 0x74, /* pe":[2],"dat */
    0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x5b, /* a_offsets":[ */
    0x30, 0x2c, 0x38, 0x5d, 0x7d, 0x7d, 0x20, 0x20,                         /* 0,8]}}, 2 spaces */
    0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0,                         /* 1.0f, -2.5f */
};

static void test_golden_read(void **state) {
  char path[256];
  tmp_path(path, sizeof path, "golden.safetensors");
  write_raw(path, golden, sizeof golden);
  gr_st_file f;
  open_ok(path, &f);
  assert_string_equal(f.path, path);
  assert_int_equal(f.size, sizeof golden);
  assert_int_equal(f.n, 1);
  assert_null(f.metadata_json);
  const gr_st_tensor *t = gr_st_find(&f, "a");
  assert_ptr_equal(t, &f.tensors[0]);
  assert_null(gr_st_find(&f, "b"));
  assert_string_equal(t->name, "a");
  assert_int_equal(t->dtype, GR_ST_F32);
  assert_string_equal(t->dtype_name, "F32");
  assert_int_equal(t->rank, 1);
  assert_int_equal(t->shape[0], 2);
  assert_int_equal(t->nbytes, 8);
  assert_ptr_equal(t->data, f.buf + 64);
  float x[2];
  memcpy(x, t->data, sizeof x);
  assert_true(x[0] == 1.0f && x[1] == -2.5f);
  gr_st_close(&f);
  assert_null(f.buf);
  assert_int_equal(f.n, 0);
  gr_st_close(&f); /* twice is harmless */
  gr_st_close(NULL);
}

static void test_golden_write(void **state) {
  /* the writer produces the reference implementation's bytes exactly */
  char path[256];
  tmp_path(path, sizeof path, "golden-written.safetensors");
  const float a[2] = {1.0f, -2.5f};
  const int64_t shape[1] = {2};
  const gr_st_out t[1] = {{"a", 1, shape, a}};
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  assert_int_equal(gr_st_write(path, t, 1, NULL, &d), 0);
  assert_int_equal(c.count, 0);
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  uint8_t got[sizeof golden + 16];
  size_t n = fread(got, 1, sizeof got, fp);
  fclose(fp);
  assert_int_equal(n, sizeof golden);
  assert_memory_equal(got, golden, sizeof golden);
  gr_diag_free(&d);
}

/* ---- writing ---- */

static void test_round_trip(void **state) {
  char path[256];
  tmp_path(path, sizeof path, "round.safetensors");
  float w[6], bias[3], step[1] = {42.5f};
  for (int i = 0; i < 6; i++) w[i] = (float)i * 0.25f - 1.0f;
  for (int i = 0; i < 3; i++) bias[i] = -(float)i / 3.0f;
  w[5] = -0.0f; /* bytes, not values, must survive */
  const int64_t wshape[2] = {2, 3}, bshape[1] = {3};
  const gr_st_out t[3] = {
      {"fc.weight", 2, wshape, w},
      {"fc.bias", 1, bshape, bias},
      {"step", 0, NULL, step},
  };
  const char *meta = "{\"format\": \"pt\", \"note\": \"caf\\u00e9 \\\"q\\\"\"}";
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  assert_int_equal(gr_st_write(path, t, 3, meta, &d), 0);
  assert_int_equal(c.count, 0);
  gr_diag_free(&d);

  gr_st_file f;
  open_ok(path, &f);
  assert_int_equal(f.n, 3);
  assert_non_null(f.metadata_json);
  assert_string_equal(f.metadata_json, meta);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f.buf[i];
  assert_int_equal(hlen % 8, 0);
  assert_int_equal(f.size, 8 + hlen + 4 * (6 + 3 + 1));
  const uint8_t *data = f.buf + 8 + hlen;
  int64_t off = 0;
  for (int i = 0; i < 3; i++) {
    const gr_st_tensor *x = &f.tensors[i];
    assert_string_equal(x->name, t[i].name);
    assert_ptr_equal(gr_st_find(&f, t[i].name), x);
    assert_int_equal(x->dtype, GR_ST_F32);
    assert_string_equal(x->dtype_name, "F32");
    assert_int_equal(x->rank, t[i].rank);
    int64_t count = 1;
    for (int k = 0; k < x->rank; k++) {
      assert_int_equal(x->shape[k], t[i].shape[k]);
      count *= x->shape[k];
    }
    assert_int_equal(x->nbytes, 4 * count);
    assert_ptr_equal(x->data, data + off); /* contiguous, in the given order */
    assert_memory_equal(x->data, t[i].data, (size_t)x->nbytes);
    off += x->nbytes;
  }
  gr_st_close(&f);
}

static void test_write_escaped_names(void **state) {
  char path[256];
  tmp_path(path, sizeof path, "names.safetensors");
  const float v[2] = {1, 2};
  const int64_t one[1] = {1};
  const gr_st_out t[2] = {{"q\"uote\\back\nnl\tcaf\xc3\xa9", 1, one, v}, {"\xf0\x9f\x98\x80", 1, one, v + 1}};
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  assert_int_equal(gr_st_write(path, t, 2, NULL, &d), 0);
  gr_diag_free(&d);
  gr_st_file f;
  open_ok(path, &f);
  assert_int_equal(f.n, 2);
  assert_string_equal(f.tensors[0].name, t[0].name);
  assert_string_equal(f.tensors[1].name, t[1].name);
  assert_non_null(gr_st_find(&f, "\xf0\x9f\x98\x80"));
  gr_st_close(&f);
}

static void test_write_empty(void **state) {
  char path[256];
  tmp_path(path, sizeof path, "empty.safetensors");
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  assert_int_equal(gr_st_write(path, NULL, 0, "{}", &d), 0);
  gr_diag_free(&d);
  gr_st_file f;
  open_ok(path, &f);
  assert_int_equal(f.n, 0);
  assert_string_equal(f.metadata_json, "{}");
  assert_int_equal(f.size, 8 + 24); /* {"__metadata__":{}} is 19 bytes, padded to 24 */
  gr_st_close(&f);
}

/* Counts the entries of tmpdir whose name contains `part`. */
static int count_entries(const char *part) {
  DIR *dd = opendir(tmpdir);
  assert_non_null(dd);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dd)) != NULL) n += strstr(e->d_name, part) != NULL;
  closedir(dd);
  return n;
}

static void read_all(const char *path, uint8_t *buf, size_t cap, size_t *len) {
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  *len = fread(buf, 1, cap, fp);
  assert_int_equal(ferror(fp), 0);
  fclose(fp);
}

static void test_write_replaces_atomically(void **state) {
  char path[256];
  tmp_path(path, sizeof path, "replace.safetensors");
  const float v1[1] = {1}, v2[2] = {2, 3};
  const int64_t s1[1] = {1}, s2[1] = {2};
  const gr_st_out first[1] = {{"x", 1, s1, v1}}, second[1] = {{"y", 1, s2, v2}};
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  assert_int_equal(gr_st_write(path, first, 1, NULL, &d), 0);
  assert_int_equal(gr_st_write(path, second, 1, "{\"v\":\"2\"}", &d), 0);
  assert_int_equal(c.count, 0);
  assert_int_equal(count_entries(".tmp."), 0);
  gr_st_file f;
  open_ok(path, &f);
  assert_int_equal(f.n, 1);
  assert_string_equal(f.tensors[0].name, "y");
  assert_null(gr_st_find(&f, "x"));
  assert_string_equal(f.metadata_json, "{\"v\":\"2\"}");
  gr_st_close(&f);

  /* a write that fails leaves the old file byte for byte, and no temp file */
  uint8_t before[512], after[512];
  size_t nb, na;
  read_all(path, before, sizeof before, &nb);
  const gr_st_out dup[2] = {{"y", 1, s1, v1}, {"y", 1, s1, v1}};
  assert_int_equal(gr_st_write(path, dup, 2, NULL, &d), -1);
  assert_int_equal(c.count, 1);
  read_all(path, after, sizeof after, &na);
  assert_int_equal(na, nb);
  assert_memory_equal(after, before, nb);
  assert_int_equal(count_entries(".tmp."), 0);
  gr_diag_free(&d);
}

static void test_write_missing_dir(void **state) {
  char path[256], dir[256];
  tmp_path(dir, sizeof dir, "no-such-dir");
  tmp_path(path, sizeof path, "no-such-dir/model.safetensors");
  const float v[1] = {1};
  const int64_t s[1] = {1};
  const gr_st_out t[1] = {{"x", 1, s, v}};
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  assert_int_equal(gr_st_write(path, t, 1, NULL, &d), -1);
  print_message("  %s\n", c.msg);
  assert_int_equal(c.count, 1);
  assert_string_equal(c.file, path);
  assert_non_null(strstr(c.msg, "cannot create the temporary file"));
  assert_non_null(strstr(c.msg, "No such file or directory"));
  struct stat st;
  assert_int_equal(stat(dir, &st), -1);
  assert_int_equal(count_entries("model"), 0);
  gr_diag_free(&d);
}

static void test_write_over_directory(void **state) {
  /* rename(2) fails: the temp file must be removed and the directory left alone */
  char path[256];
  tmp_path(path, sizeof path, "a-directory");
  assert_int_equal(mkdir(path, 0700), 0);
  const float v[1] = {1};
  const int64_t s[1] = {1};
  const gr_st_out t[1] = {{"x", 1, s, v}};
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  assert_int_equal(gr_st_write(path, t, 1, NULL, &d), -1);
  print_message("  %s\n", c.msg);
  assert_int_equal(c.count, 1);
  assert_non_null(strstr(c.msg, "cannot rename"));
  assert_int_equal(count_entries(".tmp."), 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  gr_diag_free(&d);
}

/* gr_st_write must fail with one error holding `words`, and leave nothing at the path. */
static void expect_write_error(const gr_st_out *t, int n, const char *meta, const char *const *words) {
  char path[256];
  tmp_path(path, sizeof path, "never-written.safetensors");
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  assert_int_equal(gr_st_write(path, t, n, meta, &d), -1);
  print_message("  %s\n", c.msg);
  assert_int_equal(c.count, 1);
  assert_string_equal(c.file, path);
  for (const char *const *w = words; *w; w++)
    if (!strstr(c.msg, *w)) fail_msg("message \"%s\" lacks \"%s\"", c.msg, *w);
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(count_entries("never-written"), 0);
  gr_diag_free(&d);
}

static void test_write_bad_arguments(void **state) {
  const float v[4] = {1, 2, 3, 4};
  const int64_t s1[1] = {1}, neg[2] = {2, -1}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  const int64_t huge[2] = {INT64_MAX, 2};
  expect_write_error((const gr_st_out[]){{"a", 1, s1, v}, {"b", 1, s1, v}, {"a", 1, s1, v}}, 3, NULL,
                     WORDS("duplicate tensor name 'a'", "tensors 0 and 2"));
  expect_write_error((const gr_st_out[]){{"", 1, s1, v}}, 1, NULL, WORDS("tensor 0", "empty name"));
  expect_write_error((const gr_st_out[]){{NULL, 1, s1, v}}, 1, NULL, WORDS("empty name"));
  expect_write_error((const gr_st_out[]){{"bad\xc3(", 1, s1, v}}, 1, NULL, WORDS("not valid UTF-8", "0xC3"));
  expect_write_error((const gr_st_out[]){{"__metadata__", 1, s1, v}}, 1, NULL, WORDS("__metadata__", "reserves"));
  expect_write_error((const gr_st_out[]){{"w", 9, nine, v}}, 1, NULL, WORDS("tensor 'w'", "rank 9"));
  expect_write_error((const gr_st_out[]){{"w", 2, NULL, v}}, 1, NULL, WORDS("tensor 'w'", "no shape"));
  expect_write_error((const gr_st_out[]){{"w", 2, neg, v}}, 1, NULL, WORDS("tensor 'w'", "shape[1]", "negative"));
  expect_write_error((const gr_st_out[]){{"w", 2, huge, v}}, 1, NULL, WORDS("tensor 'w'", "2^63-1 bytes"));
  expect_write_error((const gr_st_out[]){{"w", 1, s1, NULL}}, 1, NULL, WORDS("tensor 'w'", "no data"));
  expect_write_error(NULL, 2, NULL, WORDS("2 tensors"));
  const gr_st_out ok[1] = {{"w", 1, s1, v}};
  expect_write_error(ok, 1, "[1]", WORDS("__metadata__", "metadata byte 0", "an array"));
  expect_write_error(ok, 1, "{\"a\": 1}", WORDS("__metadata__ key 'a'", "metadata byte 1", "expected a string"));
  expect_write_error(ok, 1, "{\"a\": \"b\"", WORDS("not valid JSON", "at metadata byte 9"));
  expect_write_error(ok, 1, "{\"a\": \"b\"} x", WORDS("not valid JSON", "at metadata byte 11"));
  expect_write_error(ok, 1, "{\"k\":\"1\",\"k\":\"2\"}", WORDS("duplicate key 'k'", "metadata byte 9"));
}

/* ---- reading good files ---- */

static void test_dtypes(void **state) {
  static const char header[] = "{" ENTRY("h", "F16", "[3]", 0, 6) "," ENTRY("b", "BF16", "[2]", 6, 10) ","
      ENTRY("l", "I64", "[1]", 10, 18) "," ENTRY("u", "U8", "[3]", 18, 21) "," ENTRY("d", "F64", "[1]", 21, 29) ","
      ENTRY("i", "I32", "[1]", 29, 33) "," ENTRY("s", "I16", "[1]", 33, 35) "," ENTRY("z", "BOOL", "[2]", 35, 37) ","
      ENTRY("c", "I8", "[1]", 37, 38) "," ENTRY("q", "Q4_K", "[5]", 38, 41) "}";
  static const struct { const char *name, *dtype_name; gr_st_dtype dtype; int64_t begin, nbytes; } want[] = {
      {"h", "F16", GR_ST_F16, 0, 6},    {"b", "BF16", GR_ST_BF16, 6, 4}, {"l", "I64", GR_ST_I64, 10, 8},
      {"u", "U8", GR_ST_U8, 18, 3},     {"d", "F64", GR_ST_F64, 21, 8},  {"i", "I32", GR_ST_I32, 29, 4},
      {"s", "I16", GR_ST_OTHER, 33, 2}, {"z", "BOOL", GR_ST_OTHER, 35, 2}, {"c", "I8", GR_ST_OTHER, 37, 1},
      {"q", "Q4_K", GR_ST_OTHER, 38, 3}, /* unknown: kept, size unchecked */
  };
  char path[256];
  write_st(path, sizeof path, "dtypes.safetensors", header, 41);
  gr_st_file f;
  open_ok(path, &f);
  assert_int_equal(f.n, 10);
  const uint8_t *data = f.buf + 8 + strlen(header);
  for (int i = 0; i < 10; i++) {
    const gr_st_tensor *t = &f.tensors[i];
    assert_string_equal(t->name, want[i].name);
    assert_string_equal(t->dtype_name, want[i].dtype_name);
    assert_int_equal(t->dtype, want[i].dtype);
    assert_int_equal(t->nbytes, want[i].nbytes);
    assert_ptr_equal(t->data, data + want[i].begin);
    assert_int_equal(t->data[0], pattern((size_t)want[i].begin));
  }
  gr_st_close(&f);
  assert_int_equal(gr_st_dtype_size("BF16"), 2);
  assert_int_equal(gr_st_dtype_size("F64"), 8);
  assert_int_equal(gr_st_dtype_size("BOOL"), 1);
  assert_int_equal(gr_st_dtype_size("f32"), 0);
}

static void test_json_details(void **state) {
  /* whitespace everywhere, keys in any order, escapes and surrogate pairs in names, -0, metadata anywhere,
   * empty tensors at a boundary and a 0-sized dimension beside a huge one, a scalar, padding */
  static const char header[] =
      " {\n\t\"caf\\u00e9\\ud83d\\ude00\\\"\\\\\\/\\b\\f\\n\\r\\t\" : { \"shape\" : [ 2 ] ,\r\n"
      "  \"data_offsets\" : [ -0 , 8 ] , \"dtype\" : \"F32\" } ,\n"
      " \"__metadata__\" : { \"k\\u0041\" : \"v\\n\" , \"empty\" : \"\" } ,\n"
      " \"e\" : {\"dtype\":\"F32\",\"shape\":[0, 9223372036854775807],\"data_offsets\":[8,8]},\n"
      " \"s\" : {\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[8,9]} }   \n\t ";
  char path[256];
  write_st(path, sizeof path, "details.safetensors", header, 9);
  gr_st_file f;
  open_ok(path, &f);
  assert_int_equal(f.n, 3);
  assert_string_equal(f.tensors[0].name, "caf\xc3\xa9\xf0\x9f\x98\x80\"\\/\b\f\n\r\t");
  assert_int_equal(f.tensors[0].nbytes, 8);
  assert_string_equal(f.metadata_json, "{ \"k\\u0041\" : \"v\\n\" , \"empty\" : \"\" }");
  assert_int_equal(f.tensors[1].rank, 2);
  assert_int_equal(f.tensors[1].shape[1], INT64_MAX);
  assert_int_equal(f.tensors[1].nbytes, 0);
  assert_int_equal(f.tensors[2].rank, 0);
  assert_int_equal(f.tensors[2].nbytes, 1);
  assert_int_equal(f.tensors[2].dtype, GR_ST_U8);
  gr_st_close(&f);

  /* metadata null means none; no tensors and no data is a valid (empty) file */
  write_st(path, sizeof path, "null-meta.safetensors", "{\"__metadata__\":null}", 0);
  open_ok(path, &f);
  assert_int_equal(f.n, 0);
  assert_null(f.metadata_json);
  gr_st_close(&f);
  write_st(path, sizeof path, "empty-object.safetensors", "{}", 0);
  open_ok(path, &f);
  assert_int_equal(f.n, 0);
  gr_st_close(&f);
}

/* ---- reading bad files ---- */

static void test_missing_file(void **state) {
  char path[256];
  tmp_path(path, sizeof path, "does-not-exist.safetensors");
  expect_error(path, WORDS("cannot open", "No such file or directory"));
  tmp_path(path, sizeof path, "subdir");
  assert_int_equal(mkdir(path, 0700), 0);
  expect_error(path, WORDS("cannot open", "Is a directory"));
}

static void test_too_short(void **state) {
  char path[256];
  tmp_path(path, sizeof path, "short.safetensors");
  write_raw(path, "\x05\0\0\0\0", 5);
  expect_error(path, WORDS("file is 5 bytes long", "too short", "8-byte header length"));
  write_raw(path, "", 0);
  expect_error(path, WORDS("file is 0 bytes long", "too short"));
}

static void test_header_length(void **state) {
  char path[256];
  static const char h[] = "{}";
  write_image(path, sizeof path, "hlen.safetensors", 100, h, 2, 18); /* 20 bytes follow the length */
  expect_error(path, WORDS("header length 100", "offset 0", "larger than the file", "only 20 bytes"));
  write_image(path, sizeof path, "hlen.safetensors", 200000000, h, 2, 0);
  expect_error(path, WORDS("header length 200000000", "100 MB"));
  write_image(path, sizeof path, "hlen.safetensors", UINT64_MAX, h, 2, 0);
  expect_error(path, WORDS("header length 18446744073709551615", "100 MB"));
  write_image(path, sizeof path, "hlen.safetensors", 0, h, 0, 0); /* an empty header is not JSON */
  expect_error(path, WORDS("not valid JSON", "at header byte 0", "end of the header"));
}

static void test_bad_json(void **state) {
  char at[64];
  const char *h;
  h = "{\"a\":{\"dtype\":\"F32\" \"shape\":[1],\"data_offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("header is not valid JSON", at_byte(at, sizeof at, h, "\"shape"),
                                  "expected ',' or '}'", "found '\"'"));
  h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("not valid JSON", at_byte(at, sizeof at, h, "],\"data"), "expected a value"));
  h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}";
  snprintf(at, sizeof at, "at header byte %d", (int)strlen(h) - 1);
  expect_header_error(h, 4, WORDS("not valid JSON", at, "a string key", "found '}'"));
  h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("not valid JSON", at_byte(at, sizeof at, h, "01"), "start with 0"));
  h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}x";
  expect_header_error(h, 4, WORDS("not valid JSON", at_byte(at, sizeof at, h, "x"), "only whitespace", "'x'"));
  h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}";
  expect_header_error(h, 4, WORDS("not valid JSON", "end of the header"));
  h = "{\"a\":{\"dtype\":\"F32";
  expect_header_error(h, 0, WORDS("not valid JSON", at_byte(at, sizeof at, h, "\"F32"), "not terminated"));
  h = "{\"a\\x\":{}}";
  expect_header_error(h, 0, WORDS("not valid JSON", at_byte(at, sizeof at, h, "\\x"), "invalid escape", "'x'"));
  h = "{\"a\\u12g4\":{}}";
  expect_header_error(h, 0, WORDS("not valid JSON", at_byte(at, sizeof at, h, "\\u"), "four hexadecimal"));
  h = "{\"a\\udc00\":{}}";
  expect_header_error(h, 0, WORDS("not valid JSON", at_byte(at, sizeof at, h, "\\u"), "low surrogate"));
  h = "{\"a\\ud83dx\":{}}";
  expect_header_error(h, 0, WORDS("not valid JSON", at_byte(at, sizeof at, h, "\\u"), "high surrogate"));
  h = "{\"a\\ud83d\\u0041\":{}}";
  expect_header_error(h, 0, WORDS("not valid JSON", at_byte(at, sizeof at, h, "\\u"), "high surrogate"));
  h = "{\"a\xc3(\":{}}";
  expect_header_error(h, 0, WORDS("not valid JSON", "at header byte 3", "invalid UTF-8", "0xC3"));
  h = "{\"a\xc0\x80\":{}}"; /* overlong NUL */
  expect_header_error(h, 0, WORDS("not valid JSON", "at header byte 3", "invalid UTF-8", "0xC0"));
  h = "{\"a\xed\xa0\x80\":{}}"; /* a UTF-8-encoded surrogate */
  expect_header_error(h, 0, WORDS("not valid JSON", "at header byte 3", "invalid UTF-8", "0xED"));
  h = "{\"a\nb\":{}}";
  expect_header_error(h, 0, WORDS("not valid JSON", "at header byte 3", "control byte 0x0A"));
  h = "{\"__metadata__\":{\"a\":tru}}";
  expect_header_error(h, 0, WORDS("not valid JSON", at_byte(at, sizeof at, h, "tru"), "expected a value"));
  h = "\xef\xbb\xbf{}"; /* a byte-order mark */
  expect_header_error(h, 0, WORDS("not valid JSON", "at header byte 0", "byte 0xEF"));

  /* NUL padding is not whitespace */
  char path[256];
  static const char padded[] = "{}\0\0\0\0\0";
  write_image(path, sizeof path, "nulpad.safetensors", 8, padded, 8, 0);
  expect_error(path, WORDS("not valid JSON", "at header byte 2", "byte 0x00"));

  /* nesting is capped */
  char deep[256];
  int k = snprintf(deep, sizeof deep, "{\"__metadata__\":");
  for (int i = 0; i < 70; i++) deep[k++] = '[';
  for (int i = 0; i < 70; i++) deep[k++] = ']';
  deep[k++] = '}';
  deep[k] = 0;
  snprintf(at, sizeof at, "at header byte %d", 16 + 63);
  expect_header_error(deep, 0, WORDS("not valid JSON", at, "nesting deeper than 64"));
}

static void test_not_an_object(void **state) {
  expect_header_error("[1, 2]", 0, WORDS("header is not a JSON object", "an array", "at header byte 0"));
  expect_header_error("  \"x\"", 0, WORDS("header is not a JSON object", "a string", "at header byte 2"));
  expect_header_error("42", 0, WORDS("header is not a JSON object", "a number"));
}

static void test_bad_entry(void **state) {
  char at[64];
  const char *h;
  h = "{\"w\":[1,2]}";
  expect_header_error(h, 0, WORDS("tensor 'w'", "entry at header byte 5", "an array", "\"data_offsets\""));
  h = "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "entry at header byte 5", "missing \"dtype\""));
  h = "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "missing \"shape\""));
  h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "missing \"data_offsets\""));
  h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "unknown key \"offsets\"", at_byte(at, sizeof at, h, "\"offsets")));
  h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"dtype\":\"F32\",\"data_offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "duplicate key \"dtype\"", "at header byte 32"));
  h = "{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "dtype at header byte 14", "a number", "\"F32\""));
  h = "{\"w\":{\"dtype\":\"F 32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "dtype \"F 32\"", "not a dtype name"));
  h = "{\"w\":{\"dtype\":\"FLOAT32_BUT_LONGER\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "not a dtype name"));
  h = "{\"w\":{\"dtype\":\"\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "dtype \"\"", "not a dtype name"));
  h = "{" ENTRY("", "F32", "[1]", 0, 4) "}";
  expect_header_error(h, 4, WORDS("empty tensor name", "at header byte 1"));
  h = "{" ENTRY("a\\u0000b", "F32", "[1]", 0, 4) "}";
  expect_header_error(h, 4, WORDS("tensor 'a?b'", "NUL"));
}

static void test_bad_shape(void **state) {
  char at[64];
  const char *h;
  h = "{" ENTRY("w", "F32", "[2, -3]", 0, 24) "}";
  expect_header_error(h, 24, WORDS("tensor 'w'", "shape[1]", at_byte(at, sizeof at, h, "-3"), "is -3", "negative"));
  h = "{" ENTRY("w", "F32", "[2.5]", 0, 8) "}";
  expect_header_error(h, 8, WORDS("tensor 'w'", "shape[0]", "is 2.5", "non-negative integer"));
  h = "{" ENTRY("w", "F32", "[1e3]", 0, 8) "}";
  expect_header_error(h, 8, WORDS("tensor 'w'", "shape[0]", "is 1e3", "non-negative integer"));
  h = "{" ENTRY("w", "F32", "[\"2\"]", 0, 8) "}";
  expect_header_error(h, 8, WORDS("tensor 'w'", "shape[0]", "a string", "non-negative integer"));
  h = "{" ENTRY("w", "F32", "[99999999999999999999]", 0, 8) "}";
  expect_header_error(h, 8, WORDS("tensor 'w'", "shape[0]", "too large"));
  h = "{" ENTRY("w", "F32", "3", 0, 12) "}";
  expect_header_error(h, 12, WORDS("tensor 'w'", "shape at header byte", "a number", "an array"));
  h = "{" ENTRY("w", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "more than 8 dimensions", at_byte(at, sizeof at, h, "[1,1")));
  h = "{" ENTRY("w", "F32", "[4294967296,4294967296]", 0, 4) "}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "[4294967296, 4294967296]", "2^63-1 elements"));
  h = "{" ENTRY("w", "F32", "[4611686018427387904]", 0, 4) "}"; /* 2^62 elements of 4 bytes */
  expect_header_error(h, 4, WORDS("tensor 'w'", "of F32", "2^63-1 bytes"));
}

static void test_bad_offsets(void **state) {
  const char *h;
  h = "{" ENTRY("fc.weight", "F32", "[10, 20]", 0, 4000) "}";
  expect_header_error(h, 1024, WORDS("tensor 'fc.weight': data_offsets [0, 4000] end beyond the 1024 bytes of "
                                     "data after the header"));
  h = "{" ENTRY("fc.weight", "F32", "[10, 20]", 0, 796) "}";
  expect_header_error(h, 1024, WORDS("tensor 'fc.weight': shape [10, 20] of F32 needs 800 bytes, data_offsets "
                                     "give 796"));
  h = "{" ENTRY("s", "F64", "[]", 0, 4) "}";
  expect_header_error(h, 4, WORDS("tensor 's': shape [] of F64 needs 8 bytes, data_offsets give 4"));
  h = "{" ENTRY("w", "F32", "[1]", 8, 4) "}";
  expect_header_error(h, 8, WORDS("tensor 'w'", "data_offsets [8, 4]", "begin is after end"));
  h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}";
  expect_header_error(h, 8, WORDS("tensor 'w'", "data_offsets at header byte 47", "more than 2 elements"));
  h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "data_offsets", "1 element,", "[begin, end]"));
  h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "0 elements", "[begin, end]"));
  h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"begin\":0}}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "data_offsets", "an object", "[begin, end]"));
  h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "data_offsets[0]", "is -4", "offsets cannot be negative"));
  h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,null]}}";
  expect_header_error(h, 4, WORDS("tensor 'w'", "data_offsets[1]", "null"));
  /* an unknown dtype's size is unchecked, but its range still must lie in the data */
  h = "{" ENTRY("q", "Q8", "[4]", 0, 9) "}";
  expect_header_error(h, 8, WORDS("tensor 'q'", "end beyond the 8 bytes"));
}

static void test_layout(void **state) {
  const char *h;
  h = "{" ENTRY("a", "F32", "[2]", 0, 8) "," ENTRY("b", "F32", "[2]", 4, 12) "}";
  expect_header_error(h, 12, WORDS("tensors 'a' and 'b' overlap", "[0, 8] and [4, 12]"));
  h = "{" ENTRY("b", "F32", "[2]", 4, 12) "," ENTRY("a", "F32", "[3]", 0, 12) "}";
  expect_header_error(h, 12, WORDS("overlap", "'a'", "'b'"));
  h = "{" ENTRY("a", "F32", "[2]", 0, 8) "," ENTRY("e", "F32", "[0]", 4, 4) "}"; /* empty, but inside 'a' */
  expect_header_error(h, 8, WORDS("tensors 'a' and 'e' overlap"));
  h = "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("b", "F32", "[1]", 8, 12) "}";
  expect_header_error(h, 12, WORDS("bytes 4..7 of the data are not used by any tensor", "between tensors 'a' and 'b'"));
  h = "{" ENTRY("a", "F32", "[1]", 4, 8) "}";
  expect_header_error(h, 8, WORDS("bytes 0..3 of the data are not used by any tensor", "before tensor 'a'"));
  h = "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("e", "F32", "[0]", 4, 4) "}";
  expect_header_error(h, 10, WORDS("bytes 4..9 of the data are not used by any tensor", "after tensor 'a'"));
  h = "{\"__metadata__\":{}}";
  expect_header_error(h, 3, WORDS("bytes 0..2 of the data are not used by any tensor"));
  h = "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("b", "F32", "[1]", 4, 8) "," ENTRY("a", "F32", "[1]", 8, 12) "}";
  expect_header_error(h, 12, WORDS("duplicate tensor name 'a'", "at header byte 107", "first at header byte 1"));
  h = "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("\\u0061", "F32", "[1]", 4, 8) "}"; /* the same name, escaped */
  expect_header_error(h, 8, WORDS("duplicate tensor name 'a'"));
}

static void test_bad_metadata(void **state) {
  const char *h;
  char at[64];
  h = "{\"__metadata__\":{\"k\":1}}";
  expect_header_error(h, 0, WORDS("__metadata__ key 'k'", "at header byte 17", "a number", "expected a string"));
  h = "{\"__metadata__\":[\"k\"]}";
  expect_header_error(h, 0, WORDS("__metadata__", "at header byte 16", "an array", "string"));
  h = "{\"__metadata__\":{\"k\":\"1\",\"j\":\"2\",\"k\":\"3\"}}";
  expect_header_error(h, 0, WORDS("duplicate key 'k' in __metadata__", "at header byte 33", "first at header byte 17"));
  h = "{\"__metadata__\":{},\"__metadata__\":{}}";
  expect_header_error(h, 0, WORDS("duplicate key \"__metadata__\"", at_byte(at, sizeof at, h, "\"__metadata__\":{}}")));
}

/* ---- robustness: corrupted files give one error or a clean success, never a crash ---- */

static void open_any(const char *path) {
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  gr_st_file f;
  int rc = gr_st_open(path, &f, &d);
  if (rc == 0) {
    assert_int_equal(c.count, 0);
    for (int i = 0; i < f.n; i++) { /* every pointer handed out lies within the file */
      assert_true(f.tensors[i].data >= f.buf && f.tensors[i].nbytes >= 0);
      assert_true(f.tensors[i].data + f.tensors[i].nbytes <= f.buf + f.size);
    }
  } else {
    assert_int_equal(rc, -1);
    assert_int_equal(c.count, 1);
    assert_true(c.msg[0] != 0);
  }
  gr_st_close(&f);
  gr_diag_free(&d);
}

static void test_mutations(void **state) {
  char src[256], path[256];
  tmp_path(src, sizeof src, "mutate-src.safetensors");
  tmp_path(path, sizeof path, "mutated.safetensors");
  const float w[6] = {1, 2, 3, 4, 5, 6};
  const int64_t s2[2] = {2, 3}, s1[1] = {2};
  const gr_st_out t[3] = {{"w", 2, s2, w}, {"b\xc3\xa9", 1, s1, w}, {"s", 0, NULL, w}};
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  assert_int_equal(gr_st_write(src, t, 3, "{\"a\":\"x\\u00e9\"}", &d), 0);
  gr_diag_free(&d);
  uint8_t img[512], mut[512];
  size_t n;
  read_all(src, img, sizeof img, &n);
  assert_true(n < sizeof img);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | img[i];

  /* every truncation is an error */
  for (size_t len = 0; len < n; len++) {
    write_raw(path, img, len);
    gr_diag dd;
    captured cc;
    diag_capture(&dd, &cc);
    gr_st_file f;
    assert_int_equal(gr_st_open(path, &f, &dd), -1);
    assert_int_equal(cc.count, 1);
    gr_diag_free(&dd);
  }
  /* every byte of the length field and the header replaced by a few troublesome values */
  static const uint8_t values[] = {0x00, 0x01, ' ', '"', '\\', '{', '}', '[', ']', ',', ':', '-', '0', '9',
                                   'e', 'u', 0x80, 0xC3, 0xFF};
  for (size_t pos = 0; pos < 8 + hlen; pos++) {
    for (size_t v = 0; v < sizeof values; v++) {
      memcpy(mut, img, n);
      mut[pos] = values[v];
      write_raw(path, mut, n);
      open_any(path);
    }
  }
  /* random bytes after a plausible length */
  srand(1234);
  for (int iter = 0; iter < 300; iter++) {
    size_t len = 8 + (size_t)(rand() % 120);
    for (size_t i = 8; i < len; i++) {
      static const char alphabet[] = "{}[]\",:0123456789-.eE \\u\"dtypeshapedata_offsetsF32__metadata__";
      mut[i] = rand() % 4 ? (uint8_t)alphabet[rand() % (int)(sizeof alphabet - 1)] : (uint8_t)rand();
    }
    uint64_t claim = (uint64_t)(rand() % (int)(len - 7));
    for (int i = 0; i < 8; i++) mut[i] = (uint8_t)(claim >> (8 * i));
    write_raw(path, mut, len);
    open_any(path);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_read),
      cmocka_unit_test(test_golden_write),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_write_escaped_names),
      cmocka_unit_test(test_write_empty),
      cmocka_unit_test(test_write_replaces_atomically),
      cmocka_unit_test(test_write_missing_dir),
      cmocka_unit_test(test_write_over_directory),
      cmocka_unit_test(test_write_bad_arguments),
      cmocka_unit_test(test_dtypes),
      cmocka_unit_test(test_json_details),
      cmocka_unit_test(test_missing_file),
      cmocka_unit_test(test_too_short),
      cmocka_unit_test(test_header_length),
      cmocka_unit_test(test_bad_json),
      cmocka_unit_test(test_not_an_object),
      cmocka_unit_test(test_bad_entry),
      cmocka_unit_test(test_bad_shape),
      cmocka_unit_test(test_bad_offsets),
      cmocka_unit_test(test_layout),
      cmocka_unit_test(test_bad_metadata),
      cmocka_unit_test(test_mutations),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
