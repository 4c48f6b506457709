/* Fuzz target: the image decoders' wrapper (runtime/image.c) on any file: decoded as grey and as
 * colour, then resized and turned into model input as an image folder would. */
#include "tests/fuzz/fuzz.h"
#include "runtime/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_path("in.img");
  fuzz_write(path, data, size);
  char err[256];
  for (int c = 1; c <= 3; c += 2) {
    gr_image im, small;
    if (!gr_image_read(path, c, &im, err, sizeof err)) continue;
    gr_pixels px = {.mean = {0.5, 0.5, 0.5}, .std = {0.25, 0.25, 0.25}};
    int w = im.w < 64 ? im.w : 7, h = im.h < 64 ? im.h : 5; /* big pictures shrink, small ones stay */
    if (gr_image_resize(&im, w, h, &small)) {
      float *out = malloc(sizeof(float) * (size_t)(w * h * c));
      if (out) gr_image_to_input(&small, 0, 0, h, w, (size & 1) != 0, &px, out);
      free(out);
      gr_image_free(&small);
    }
    gr_image_free(&im);
  }
  return 0;
}
