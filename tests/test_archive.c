/* test_archive.c — SHA-256 against the FIPS 180-2 / NIST example digests (with the input split into
 * odd-sized updates), and the ar writer against binutils: `ar t` lists the members, `ar p` gives their
 * bytes back, `nm -s` finds the symbol in the index, and `cc` links a program from the archive without
 * ranlib and runs it. The probe object (tests/ar_probe.c) comes from CMake as AR_PROBE_OBJ. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "compiler/archive.h"
#include "diag_capture.h"
#include "ir/sha256.h"

static void hash_hex(const void *data, size_t n, size_t chunk, char hex[65]) {
  gr_sha256 s;
  gr_sha256_init(&s);
  for (size_t i = 0; i < n; i += chunk) gr_sha256_update(&s, (const char *)data + i, n - i < chunk ? n - i : chunk);
  uint8_t dig[32];
  gr_sha256_final(&s, dig);
  gr_sha256_hex(dig, hex);
}

static void test_sha256_vectors(void **state) {
  (void)state;
  static const struct { const char *in, *want; } v[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
  };
  char hex[65];
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    for (size_t chunk = 1; chunk <= 65; chunk += 7) { /* whole, and split at every kind of boundary */
      hash_hex(v[i].in, strlen(v[i].in), chunk, hex);
      assert_string_equal(hex, v[i].want);
    }
}

static void test_sha256_million_a(void **state) {
  (void)state;
  size_t n = 1000000;
  char *a = malloc(n);
  assert_non_null(a);
  memset(a, 'a', n);
  char hex[65];
  static const size_t chunks[] = {1000000, 1, 63, 65, 127, 4099};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
    hash_hex(a, n, chunks[i], hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
  free(a);
}

/* A scratch directory, removed by the teardown. */
static char dir[256];

static int make_dir(void **state) {
  (void)state;
  const char *t = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/graft_ar_XXXXXX", t && *t ? t : "/tmp");
  return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* Runs a shell command and returns its standard output (at most n-1 bytes); fails the test if it fails. */
static void run(const char *cmd, char *out, size_t n) {
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t got = fread(out, 1, n - 1, p);
  out[got] = 0;
  int st = pclose(p);
  if (st != 0) fail_msg("`%s` failed (status %d): %s", cmd, st, out);
}

static char *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc((size_t)len + 1);
  assert_non_null(p);
  assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return p;
}

/* Odd sizes (padding), a long name (the "//" table), an empty member and no symbols at all: ar gives
 * back the names and the bytes; the same members give the same archive. */
static void test_archive_members(void **state) {
  (void)state;
  static const char long_name[] = "a_member_name_longer_than_fifteen.txt";
  gr_ar_member m[] = {
      {"odd.txt", "abc", 3, NULL, 0},
      {long_name, "hello\n", 6, NULL, 0},
      {"empty", NULL, 0, NULL, 0},
      {"fifteen_chars_x", "x", 1, NULL, 0},
      {"sixteen_chars_xy", "xy", 2, NULL, 0},
  };
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  char path[512], cmd[1024], out[4096];
  snprintf(path, sizeof path, "%s/libtext.a", dir);
  assert_true(gr_write_archive(path, m, 5, &d));
  assert_int_equal(c.count, 0);
  snprintf(cmd, sizeof cmd, "'%s' t '%s'", GR_AR, path);
  run(cmd, out, sizeof out);
  assert_string_equal(out, "odd.txt\na_member_name_longer_than_fifteen.txt\nempty\nfifteen_chars_x\nsixteen_chars_xy\n");
  for (int i = 0; i < 5; i++) {
    snprintf(cmd, sizeof cmd, "'%s' p '%s' '%s'", GR_AR, path, m[i].name);
    run(cmd, out, sizeof out);
    assert_int_equal(strlen(out), m[i].size);
    assert_memory_equal(out, m[i].size ? m[i].data : "", m[i].size);
  }
  size_t n1, n2;
  char *a = read_file(path, &n1);
  assert_memory_equal(a, "!<arch>\n/               0           0     0     0       4         `\n", 68);
  assert_true(gr_write_archive(path, m, 5, &d)); /* replaces the file */
  char *b = read_file(path, &n2);
  assert_int_equal(n1, n2);
  assert_memory_equal(a, b, n1);
  free(a);
  free(b);
  gr_diag_free(&d);
}

/* A real object: the index names its symbol, and a program links from the archive and runs. */
static void test_archive_links(void **state) {
  (void)state;
  size_t n_obj;
  char *obj = read_file(AR_PROBE_OBJ, &n_obj);
  static const char *const syms[] = {"graft_ar_probe"};
  gr_ar_member m[] = {
      {"unindexed.o", obj, n_obj, NULL, 0}, /* the same code, not in the index: ld must not need it */
      {"graft_probe_with_a_long_name.o", obj, n_obj, syms, 1},
  };
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  char path[512], cmd[2048], out[4096];
  snprintf(path, sizeof path, "%s/libprobe.a", dir);
  assert_true(gr_write_archive(path, m, 2, &d));
  assert_int_equal(c.count, 0);
  free(obj);

  snprintf(cmd, sizeof cmd, "'%s' t '%s'", GR_AR, path);
  run(cmd, out, sizeof out);
  assert_string_equal(out, "unindexed.o\ngraft_probe_with_a_long_name.o\n");
  snprintf(cmd, sizeof cmd, "'%s' -s '%s'", GR_NM, path);
  run(cmd, out, sizeof out);
  if (!strstr(out, "Archive index:\ngraft_ar_probe in graft_probe_with_a_long_name.o\n"))
    fail_msg("nm -s shows no index entry for graft_ar_probe:\n%s", out);

  char main_c[512], prog[512];
  snprintf(main_c, sizeof main_c, "%s/main.c", dir);
  snprintf(prog, sizeof prog, "%s/prog", dir);
  FILE *f = fopen(main_c, "w");
  assert_non_null(f);
  fputs("#include <stdio.h>\nint graft_ar_probe(int x);\n"
        "int main(void) { printf(\"%d\\n\", graft_ar_probe(7)); return 0; }\n", f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "'%s' -o '%s' '%s' -L'%s' -lprobe 2>&1", GR_CC, prog, main_c, dir);
  run(cmd, out, sizeof out);
  snprintf(cmd, sizeof cmd, "'%s'", prog);
  run(cmd, out, sizeof out);
  assert_string_equal(out, "43\n");
  gr_diag_free(&d);
}

/* A directory that does not exist: an error naming the path, and no file anywhere. */
static void test_archive_error(void **state) {
  (void)state;
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  char path[512];
  snprintf(path, sizeof path, "%s/no/such/dir/libx.a", dir);
  gr_ar_member m = {"x.o", "x", 1, NULL, 0};
  assert_false(gr_write_archive(path, &m, 1, &d));
  assert_int_equal(c.count, 1);
  assert_int_equal(c.kind, GR_DIAG_ERROR);
  assert_string_equal(c.file, path);
  if (!strstr(c.msg, path) || !strstr(c.msg, "No such file or directory")) fail_msg("message: %s", c.msg);

  /* a name the format cannot hold is refused before anything is created */
  snprintf(path, sizeof path, "%s/libbad.a", dir);
  gr_ar_member bad = {"sub/x.o", "x", 1, NULL, 0};
  assert_false(gr_write_archive(path, &bad, 1, &d));
  assert_int_equal(c.count, 2);
  assert_non_null(strstr(c.msg, "sub/x.o"));
  assert_int_equal(access(path, F_OK), -1);
  char cmd[512], out[256];
  snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c tmp || true", dir);
  run(cmd, out, sizeof out);
  assert_string_equal(out, "0\n");
  gr_diag_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sha256_vectors),  cmocka_unit_test(test_sha256_million_a),
      cmocka_unit_test(test_archive_members), cmocka_unit_test(test_archive_links),
      cmocka_unit_test(test_archive_error),
  };
  return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
