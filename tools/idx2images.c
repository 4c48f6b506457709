/* idx2images — writes the images of an IDX file pair (Fashion-MNIST, MNIST) as an image folder, one
 * sub-folder per class, so that graft's image-folder data (format: images) can be tried and tested
 * on a known data set:
 *   idx2images IMAGES LABELS OUTDIR [--classes 5,6,...] [--per-class N] [--names a,b,...] [--format png|jpeg|both] [--rgb]
 * --classes keeps only those labels; --per-class the first N images of each;
 * --names gives the folders of labels 0, 1, ... (default: the label numbers); --format both writes
 * every other image as a JPEG; --rgb writes three-channel images. Exit status 1 on any error. */
#include "runtime/idx.h"
#include "runtime/image.h"
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int fail(const char *msg, const char *arg) {
  fprintf(stderr, "idx2images: %s%s\n", msg, arg ? arg : "");
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 4)
    return fail("usage: idx2images IMAGES LABELS OUTDIR [--classes 5,6,...] [--per-class N] [--names a,b,...] [--format png|jpeg|both] [--rgb]",
                NULL);
  long per_class = 0;
  bool keep[256], some = false;
  const char *format = "png";
  char *names[256] = {0};
  int n_names = 0, channels = 1;
  for (int i = 4; i < argc; i++) {
    if (!strcmp(argv[i], "--per-class") && i + 1 < argc) {
      per_class = strtol(argv[++i], NULL, 10);
    } else if (!strcmp(argv[i], "--format") && i + 1 < argc) {
      format = argv[++i];
      if (strcmp(format, "png") && strcmp(format, "jpeg") && strcmp(format, "both")) return fail("--format takes png, jpeg or both, not ", format);
    } else if (!strcmp(argv[i], "--names") && i + 1 < argc) {
      for (char *t = strtok(argv[++i], ","); t && n_names < 256; t = strtok(NULL, ",")) names[n_names++] = t;
    } else if (!strcmp(argv[i], "--classes") && i + 1 < argc) {
      memset(keep, 0, sizeof keep);
      some = true;
      for (char *t = strtok(argv[++i], ","); t; t = strtok(NULL, ",")) keep[strtol(t, NULL, 10) & 255] = true;
    } else if (!strcmp(argv[i], "--rgb")) {
      channels = 3;
    } else {
      return fail("unknown option ", argv[i]);
    }
  }
  gr_diag d;
  gr_diag_init(&d);
  gr_idx im, lb;
  if (gr_idx_read(argv[1], &im, &d) || gr_idx_read(argv[2], &lb, &d)) return 1;
  if (im.ndim != 3 || lb.ndim != 1 || lb.dims[0] != im.dims[0]) return fail("expected images [n, h, w] and as many labels", NULL);
  if (mkdir(argv[3], 0777) && errno != EEXIST) return fail("cannot create ", argv[3]);
  long count[256] = {0};
  int h = (int)im.dims[1], w = (int)im.dims[2];
  gr_image pic = {w, h, channels, malloc((size_t)(w * h * channels))};
  char path[4096], err[256];
  for (int64_t i = 0; i < im.dims[0]; i++) {
    int k = lb.data[i];
    if ((per_class && count[k] >= per_class) || (some && !keep[k])) continue;
    char num[16];
    snprintf(num, sizeof num, "%d", k);
    const char *dir = k < n_names ? names[k] : num;
    snprintf(path, sizeof path, "%s/%s", argv[3], dir);
    if (mkdir(path, 0777) && errno != EEXIST) return fail("cannot create ", path);
    for (int p = 0; p < w * h; p++)
      for (int c = 0; c < channels; c++) pic.data[p * channels + c] = im.data[i * w * h + p];
    bool jpeg = !strcmp(format, "jpeg") || (!strcmp(format, "both") && count[k] % 2);
    snprintf(path, sizeof path, "%s/%s/%05lld.%s", argv[3], dir, (long long)i, jpeg ? "jpg" : "png");
    if (!(jpeg ? gr_image_write_jpeg(path, &pic, 95, err, sizeof err) : gr_image_write_png(path, &pic, err, sizeof err)))
      return fail(err, NULL);
    count[k]++;
  }
  free(pic.data);
  gr_idx_free(&im);
  gr_idx_free(&lb);
  gr_diag_free(&d);
  return 0;
}
