/* test_image.c — cmocka tests for image decoding and image-folder data sets (runtime/image.c,
 * runtime/imageset.c): PNG and JPEG files read back as written, channel conversion with PIL's
 * formula, every kind of broken file rejected with a message, an image folder's classes and labels,
 * centre crops, and training augmentation that gives only valid crops and flips, reproducibly, the
 * same whether or not the worker thread prepared the batch. (Resizing is compared with PIL/torchvision
 * bit for bit in tests/torch/parity.py, case "images".) Files go into a fresh mkdtemp directory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/runtime.h"
#include "tests/diag_capture.h"

static char tmpdir[64];

static int group_setup(void **state) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/graft-test-image-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

static const char *tmp_path(const char *name) {
  static char p[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
  return p[k];
}

/* A w x h picture of c channels whose pixels encode their place (distinct where it matters). */
static gr_image pattern(int w, int h, int c, int salt) {
  gr_image im = {w, h, c, malloc((size_t)(w * h * c))};
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < c; k++) im.data[(y * w + x) * c + k] = (uint8_t)(salt * 37 + y * 16 + x * 3 + k * 70);
  return im;
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, n, f), n);
  fclose(f);
}

static size_t read_bytes(const char *path, uint8_t *buf, size_t cap) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  size_t n = fread(buf, 1, cap, f);
  fclose(f);
  return n;
}

static void test_png_round_trip(void **state) {
  char err[256];
  for (int c = 1; c <= 3; c += 2) {
    gr_image im = pattern(13, 7, c, c), back;
    const char *path = tmp_path(c == 1 ? "grey.png" : "rgb.png");
    assert_true(gr_image_write_png(path, &im, err, sizeof err));
    assert_true(gr_image_read(path, c, &back, err, sizeof err));
    assert_int_equal(back.w, 13);
    assert_int_equal(back.h, 7);
    assert_int_equal(back.c, c);
    assert_memory_equal(back.data, im.data, (size_t)(13 * 7 * c));
    gr_image_free(&back);
    gr_image_free(&im);
  }
}

/* colour read as grey is PIL's convert('L'); grey read as colour repeats the value */
static void test_channel_conversion(void **state) {
  char err[256];
  gr_image rgb = pattern(5, 4, 3, 2), grey = pattern(5, 4, 1, 3), out;
  assert_true(gr_image_write_png(tmp_path("c3.png"), &rgb, err, sizeof err));
  assert_true(gr_image_write_png(tmp_path("c1.png"), &grey, err, sizeof err));
  assert_true(gr_image_read(tmp_path("c3.png"), 1, &out, err, sizeof err));
  for (int i = 0; i < 20; i++) {
    const uint8_t *p = rgb.data + 3 * i;
    assert_int_equal(out.data[i], (19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 0x8000u) >> 16);
  }
  gr_image_free(&out);
  assert_true(gr_image_read(tmp_path("c1.png"), 3, &out, err, sizeof err));
  for (int i = 0; i < 20; i++)
    for (int k = 0; k < 3; k++) assert_int_equal(out.data[3 * i + k], grey.data[i]);
  gr_image_free(&out);
  gr_image_free(&rgb);
  gr_image_free(&grey);
}

static void test_jpeg_round_trip(void **state) {
  char err[256];
  gr_image im = {16, 16, 3, malloc(16 * 16 * 3)}, back;
  for (int i = 0; i < 16 * 16 * 3; i++) im.data[i] = (uint8_t)(100 + (i % 48)); /* smooth: JPEG keeps it closely */
  assert_true(gr_image_write_jpeg(tmp_path("a.jpg"), &im, 95, err, sizeof err));
  assert_true(gr_image_read(tmp_path("a.jpg"), 3, &back, err, sizeof err));
  assert_int_equal(back.w, 16);
  assert_int_equal(back.h, 16);
  double sum = 0;
  for (int i = 0; i < 16 * 16 * 3; i++) sum += abs(back.data[i] - im.data[i]);
  assert_true(sum / (16 * 16 * 3) < 4.0);
  gr_image_free(&back);
  gr_image_free(&im);
}

/* every kind of broken file: a false return and a message saying what is wrong */
static void test_bad_files(void **state) {
  char err[256];
  gr_image out, im = pattern(32, 32, 3, 1);
  uint8_t buf[1 << 16];
  assert_true(gr_image_write_png(tmp_path("ok.png"), &im, err, sizeof err));
  assert_true(gr_image_write_jpeg(tmp_path("ok.jpg"), &im, 90, err, sizeof err));
  size_t np = read_bytes(tmp_path("ok.png"), buf, sizeof buf);
  write_bytes(tmp_path("cut.png"), buf, np / 2);
  assert_false(gr_image_read(tmp_path("cut.png"), 3, &out, err, sizeof err));
  assert_non_null(strstr(err, "corrupt PNG"));
  assert_null(out.data);
  buf[np / 2] ^= 0xFF; /* a damaged byte inside the compressed data: a CRC or zlib error */
  write_bytes(tmp_path("bad.png"), buf, np);
  assert_false(gr_image_read(tmp_path("bad.png"), 3, &out, err, sizeof err));
  assert_non_null(strstr(err, "corrupt PNG"));
  size_t nj = read_bytes(tmp_path("ok.jpg"), buf, sizeof buf);
  write_bytes(tmp_path("cut.jpg"), buf, nj / 2);
  assert_false(gr_image_read(tmp_path("cut.jpg"), 3, &out, err, sizeof err));
  assert_non_null(strstr(err, "truncated"));
  write_bytes(tmp_path("head.jpg"), buf, 40); /* inside the headers */
  assert_false(gr_image_read(tmp_path("head.jpg"), 3, &out, err, sizeof err));
  assert_non_null(strstr(err, "corrupt JPEG"));
  write_bytes(tmp_path("text.png"), "not an image at all\n", 20);
  assert_false(gr_image_read(tmp_path("text.png"), 3, &out, err, sizeof err));
  assert_non_null(strstr(err, "not a PNG or JPEG"));
  write_bytes(tmp_path("empty.jpg"), "", 0);
  assert_false(gr_image_read(tmp_path("empty.jpg"), 3, &out, err, sizeof err));
  assert_non_null(strstr(err, "empty file"));
  assert_false(gr_image_read(tmp_path("missing.png"), 3, &out, err, sizeof err));
  assert_non_null(strstr(err, "cannot open"));
  gr_image_free(&im);
}

static void test_resize_keeps_flat_images_flat(void **state) {
  gr_image flat = {9, 7, 1, malloc(63)}, out;
  memset(flat.data, 77, 63);
  int sizes[][2] = {{3, 2}, {20, 15}, {9, 3}, {4, 7}};
  for (int i = 0; i < 4; i++) {
    assert_true(gr_image_resize(&flat, sizes[i][0], sizes[i][1], &out));
    assert_int_equal(out.w, sizes[i][0]);
    assert_int_equal(out.h, sizes[i][1]);
    for (int k = 0; k < out.w * out.h; k++) assert_int_equal(out.data[k], 77);
    gr_image_free(&out);
  }
  gr_image_free(&flat);
  gr_pixels px = {.resize_h = 10};
  int w, h;
  gr_image_resized_size(&px, 30, 20, &w, &h); /* the shorter side to 10 */
  assert_int_equal(w, 15);
  assert_int_equal(h, 10);
  gr_image_resized_size(&px, 7, 22, &w, &h);
  assert_int_equal(w, 10);
  assert_int_equal(h, 31); /* 10 * 22 / 7 = 31.4, rounded down as torchvision does */
}

/* A model taking [N, 1, 6, 6] pictures, 3 classes. */
static gr_rt_model image_model(void) {
  gr_rt_model m = {.dtype = GR_F32, .in_dtype = GR_F32, .n_classes = 3, .max_batch = 4};
  m.in_shape = (gr_shape){.rank = 4, .dim = {GR_BATCH, 1, 6, 6}};
  m.sample_numel = 36;
  return m;
}

/* tmp/folder/{bee,ant}/: 2 ants and 3 bees, 8 x 8 grey pictures */
static const char *make_folder(void) {
  char err[256];
  mkdir(tmp_path("folder"), 0777);
  mkdir(tmp_path("folder/bee"), 0777);
  mkdir(tmp_path("folder/ant"), 0777);
  mkdir(tmp_path("folder/.hidden"), 0777);
  for (int i = 0; i < 5; i++) {
    gr_image im = pattern(8, 8, 1, i);
    char name[64];
    snprintf(name, sizeof name, "folder/%s/%d.%s", i < 2 ? "ant" : "bee", i, i == 4 ? "PNG" : "png");
    assert_true(gr_image_write_png(tmp_path(name), &im, err, sizeof err));
    gr_image_free(&im);
  }
  write_bytes(tmp_path("folder/bee/notes.txt"), "x", 1); /* not an image: not a sample */
  return tmp_path("folder");
}

static void test_folder_classes_and_centre_crop(void **state) {
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  gr_rt_model m = image_model();
  gr_pixels px = {.mean = {0.5, 0.5, 0.5}, .std = {0.25, 0.25, 0.25}};
  gr_dataset ds;
  assert_true(gr_dataset_load_images(&ds, make_folder(), &px, &m, &d));
  assert_int_equal(c.count, 0);
  assert_int_equal(ds.n, 5);
  assert_int_equal(gr_dataset_class_count(&ds), 2);
  assert_string_equal(gr_dataset_class_name(&ds, 0), "ant");
  assert_string_equal(gr_dataset_class_name(&ds, 1), "bee");
  const int32_t *y = ds.y;
  int32_t want[5] = {0, 0, 1, 1, 1};
  assert_memory_equal(y, want, sizeof want);
  assert_non_null(strstr(gr_dataset_sample_path(&ds, 4), "bee/4.PNG"));
  int64_t idx[2] = {3, 0};
  float x[2 * 36];
  assert_true(gr_dataset_samples(&ds, idx, 2, false, 0, x, &d));
  for (int s = 0; s < 2; s++) { /* the centre 6 x 6 of 8 x 8: from (1, 1) */
    gr_image im = pattern(8, 8, 1, (int)idx[s]);
    for (int yy = 0; yy < 6; yy++)
      for (int xx = 0; xx < 6; xx++)
        assert_float_equal(x[s * 36 + yy * 6 + xx], (im.data[(yy + 1) * 8 + xx + 1] / 255.0 - 0.5) / 0.25, 1e-5);
    gr_image_free(&im);
  }
  gr_dataset_free(&ds);
  gr_diag_free(&d);
}

/* which of the 3 x 3 crops and 2 flips of sample i the input x is; -1 if none */
static int which_crop(int i, const float *x, const gr_pixels *px) {
  gr_image im = pattern(8, 8, 1, i);
  float cand[36];
  int found = -1;
  for (int k = 0; k < 18 && found < 0; k++) {
    gr_image_to_input(&im, k / 6, k / 2 % 3, 6, 6, k % 2, px, cand);
    if (!memcmp(cand, x, sizeof cand)) found = k;
  }
  gr_image_free(&im);
  return found;
}

static void test_augmentation(void **state) {
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  gr_rt_model m = image_model();
  gr_pixels px = {.mean = {0}, .std = {1, 1, 1}, .random_crop = true, .flip = true};
  gr_dataset ds;
  assert_true(gr_dataset_load_images(&ds, make_folder(), &px, &m, &d));
  int seen[18] = {0}, kinds = 0;
  int64_t idx[4] = {0, 2, 4, 1};
  float x[4 * 36], again[4 * 36];
  for (uint64_t seed = 0; seed < 40; seed++) {
    assert_true(gr_dataset_samples(&ds, idx, 4, true, seed, x, &d));
    for (int s = 0; s < 4; s++) {
      int k = which_crop((int)idx[s], x + s * 36, &px);
      assert_true(k >= 0); /* a valid crop, maybe mirrored */
      kinds += !seen[k]++;
    }
    gr_dataset_prefetch(&ds, idx, 4, true, seed); /* the worker's batch is the same */
    assert_true(gr_dataset_samples(&ds, idx, 4, true, seed, again, &d));
    assert_memory_equal(x, again, sizeof x);
  }
  assert_true(kinds >= 12); /* 160 draws of 18 choices */
  gr_dataset_prefetch(&ds, idx, 4, true, 7); /* a prefetched batch nobody asks for is dropped */
  assert_true(gr_dataset_samples(&ds, idx, 2, false, 0, x, &d));
  assert_int_equal(c.count, 0);
  gr_dataset_free(&ds);
  gr_diag_free(&d);
}

static void test_folder_errors(void **state) {
  gr_diag d;
  captured c;
  diag_capture(&d, &c);
  gr_rt_model m = image_model();
  gr_pixels px = {.std = {1, 1, 1}};
  gr_dataset ds;
  assert_false(gr_dataset_load_images(&ds, tmp_path("nowhere"), &px, &m, &d));
  assert_non_null(strstr(c.msg, "cannot read the image folder"));
  mkdir(tmp_path("flat"), 0777);
  assert_false(gr_dataset_load_images(&ds, tmp_path("flat"), &px, &m, &d));
  assert_non_null(strstr(c.msg, "no class sub-folders"));
  mkdir(tmp_path("flat/empty"), 0777);
  assert_false(gr_dataset_load_images(&ds, tmp_path("flat"), &px, &m, &d));
  assert_non_null(strstr(c.msg, "has no PNG or JPEG files"));
  m.n_classes = 1;
  assert_false(gr_dataset_load_images(&ds, make_folder(), &px, &m, &d));
  assert_non_null(strstr(c.msg, "2 class sub-folders but the model has 1 classes"));
  m = image_model();
  m.in_shape.dim[1] = 2;
  assert_false(gr_dataset_load_images(&ds, make_folder(), &px, &m, &d));
  assert_non_null(strstr(c.msg, "C = 1 (grey) or 3 (RGB)"));
  /* a picture smaller than the model input, and a broken one: errors naming the file */
  m = image_model();
  char err[256];
  gr_image small = pattern(5, 9, 1, 0);
  mkdir(tmp_path("odd"), 0777);
  mkdir(tmp_path("odd/a"), 0777);
  assert_true(gr_image_write_png(tmp_path("odd/a/small.png"), &small, err, sizeof err));
  write_bytes(tmp_path("odd/a/zz.jpg"), "\xFF\xD8\xFF\xE0", 4);
  gr_image_free(&small);
  assert_true(gr_dataset_load_images(&ds, tmp_path("odd"), &px, &m, &d));
  int64_t i0 = 0, i1 = 1;
  float x[36];
  assert_false(gr_dataset_samples(&ds, &i0, 1, false, 0, x, &d));
  assert_non_null(strstr(c.file, "odd/a/small.png"));
  assert_non_null(strstr(c.msg, "is 5 x 9 pixels, smaller than the model input of 6 x 6"));
  gr_dataset_prefetch(&ds, &i1, 1, false, 0); /* the worker's error reaches the caller */
  assert_false(gr_dataset_samples(&ds, &i1, 1, false, 0, x, &d));
  assert_non_null(strstr(c.file, "odd/a/zz.jpg"));
  assert_non_null(strstr(c.msg, "corrupt JPEG"));
  gr_dataset_free(&ds);
  gr_diag_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_png_round_trip),
      cmocka_unit_test(test_channel_conversion),
      cmocka_unit_test(test_jpeg_round_trip),
      cmocka_unit_test(test_bad_files),
      cmocka_unit_test(test_resize_keeps_flat_images_flat),
      cmocka_unit_test(test_folder_classes_and_centre_crop),
      cmocka_unit_test(test_augmentation),
      cmocka_unit_test(test_folder_errors),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
