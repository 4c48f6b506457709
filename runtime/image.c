/* image.c — PNG (libpng) and JPEG (libjpeg-turbo) decoding with errors caught instead of aborting
 * the process, and the transforms of image-folder data (see image.h). */
#include "runtime/image.h"
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

void gr_image_free(gr_image *im) {
  free(im->data);
  memset(im, 0, sizeof *im);
}

static bool alloc_image(gr_image *im, int w, int h, int c) {
  im->w = w;
  im->h = h;
  im->c = c;
  im->data = malloc((size_t)w * (size_t)h * (size_t)c + 1);
  return im->data != NULL;
}

/* ---- PNG ---- */

typedef struct png_ctx {
  jmp_buf jmp;
  char *err;
  size_t err_size;
  png_bytep *rows; /* here, not in a local: a local changed after setjmp is lost by longjmp */
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg) {
  png_ctx *ctx = png_get_error_ptr(png);
  /* libpng says "Read Error" when the file ends early */
  snprintf(ctx->err, ctx->err_size, "corrupt PNG: %s", !strcmp(msg, "Read Error") ? "the file ends before the image data does (truncated?)" : msg);
  longjmp(ctx->jmp, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

/* Reads 8-bit grey or RGB pixels (whichever the file holds: palettes expanded, 16 bits cut to their
 * high byte as PIL does, alpha dropped) into *raw. */
static bool read_png(FILE *f, gr_image *raw, char *err, size_t err_size) {
  png_ctx ctx = {.err = err, .err_size = err_size};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    snprintf(err, err_size, "out of memory");
    png_destroy_read_struct(&png, NULL, NULL);
    return false;
  }
  if (setjmp(ctx.jmp)) {
    free(ctx.rows);
    gr_image_free(raw);
    png_destroy_read_struct(&png, &info, NULL);
    return false;
  }
  png_set_user_limits(png, GR_IMAGE_MAX_SIDE, GR_IMAGE_MAX_SIDE);
  png_init_io(png, f);
  png_read_info(png, info);
  int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);
  if (type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  int w = (int)png_get_image_width(png, info), h = (int)png_get_image_height(png, info), c = png_get_channels(png, info);
  if ((int64_t)w * h > GR_IMAGE_MAX_PIXELS) png_error(png, "the image has more pixels than graft reads (64 Mpixels)");
  if (c != 1 && c != 3) png_error(png, "unexpected channel count after conversion");
  if (!alloc_image(raw, w, h, c) || !(ctx.rows = malloc(sizeof(png_bytep) * (size_t)h))) png_error(png, "out of memory");
  for (int y = 0; y < h; y++) ctx.rows[y] = raw->data + (size_t)y * (size_t)w * (size_t)c;
  png_read_image(png, ctx.rows);
  png_read_end(png, NULL);
  free(ctx.rows);
  png_destroy_read_struct(&png, &info, NULL);
  return true;
}

/* ---- JPEG ---- */

typedef struct jpeg_ctx {
  struct jpeg_error_mgr mgr;
  jmp_buf jmp;
} jpeg_ctx;

static void jpeg_on_error(j_common_ptr cinfo) {
  longjmp(((jpeg_ctx *)cinfo->err)->jmp, 1);
}

/* Warnings are ignored, except the one for data that ends early: a truncated file is corrupt, not
 * an image with a grey bottom. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

static bool read_jpeg(FILE *f, gr_image *raw, char *err, size_t err_size) {
  struct jpeg_decompress_struct cinfo;
  jpeg_ctx ctx;
  cinfo.err = jpeg_std_error(&ctx.mgr);
  ctx.mgr.error_exit = jpeg_on_error;
  ctx.mgr.emit_message = jpeg_on_message;
  if (setjmp(ctx.jmp)) {
    char msg[JMSG_LENGTH_MAX];
    ctx.mgr.format_message((j_common_ptr)&cinfo, msg);
    snprintf(err, err_size, "corrupt JPEG: %s", ctx.mgr.msg_code == JWRN_JPEG_EOF ? "the file ends before the image data does (truncated?)" : msg);
    jpeg_destroy_decompress(&cinfo);
    gr_image_free(raw);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.image_width > GR_IMAGE_MAX_SIDE || cinfo.image_height > GR_IMAGE_MAX_SIDE ||
      (int64_t)cinfo.image_width * cinfo.image_height > GR_IMAGE_MAX_PIXELS) {
    snprintf(err, err_size, "JPEG of %u x %u pixels is larger than graft reads (%d on a side, 64 Mpixels in all)", cinfo.image_width,
             cinfo.image_height, GR_IMAGE_MAX_SIDE);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    snprintf(err, err_size, "CMYK JPEG images are not supported; convert it to RGB");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  int w = (int)cinfo.output_width, h = (int)cinfo.output_height, c = cinfo.output_components;
  if (!alloc_image(raw, w, h, c)) ERREXIT(&cinfo, JERR_OUT_OF_MEMORY);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = raw->data + (size_t)cinfo.output_scanline * (size_t)w * (size_t)c;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

/* ---- channels ---- */

/* raw's pixels in `channels` channels: PIL's L = (19595 R + 38470 G + 7471 B + 2^15) >> 16. */
static bool convert_channels(gr_image *raw, int channels, gr_image *out) {
  if (raw->c == channels) {
    *out = *raw;
    memset(raw, 0, sizeof *raw);
    return true;
  }
  if (!alloc_image(out, raw->w, raw->h, channels)) return false;
  size_t n = (size_t)raw->w * (size_t)raw->h;
  const uint8_t *s = raw->data;
  for (size_t i = 0; i < n; i++) {
    if (channels == 1)
      out->data[i] = (uint8_t)((19595u * s[3 * i] + 38470u * s[3 * i + 1] + 7471u * s[3 * i + 2] + 0x8000u) >> 16);
    else
      out->data[3 * i] = out->data[3 * i + 1] = out->data[3 * i + 2] = s[i];
  }
  gr_image_free(raw);
  return true;
}

bool gr_image_read(const char *path, int channels, gr_image *out, char *err, size_t err_size) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, err_size, "cannot open: %s", strerror(errno));
    return false;
  }
  uint8_t magic[8] = {0};
  size_t got = fread(magic, 1, sizeof magic, f);
  rewind(f);
  gr_image raw = {0};
  bool ok;
  if (got == 8 && !png_sig_cmp(magic, 0, 8)) {
    ok = read_png(f, &raw, err, err_size);
  } else if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    ok = read_jpeg(f, &raw, err, err_size);
  } else {
    snprintf(err, err_size, got == 0 ? "empty file; expected a PNG or JPEG image" : "not a PNG or JPEG image (its first bytes are neither)");
    ok = false;
  }
  fclose(f);
  if (ok && !convert_channels(&raw, channels, out)) {
    snprintf(err, err_size, "out of memory");
    ok = false;
  }
  gr_image_free(&raw);
  return ok;
}

/* ---- resampling ---- */

/* One pass of PIL's antialiased bilinear filter along a line of n_in samples to n_out: for output i,
 * the triangle filter around centre (i + 1/2) * scale, widened by the scale when shrinking, its
 * weights normalised to sum 1 and then, as PIL does for 8-bit images, turned into fixed point with 22
 * fraction bits, so that the result is PIL's to the bit. */
enum { FIX_BITS = 22 };
typedef struct taps {
  int first, count;
  int32_t *w; /* count weights, fixed point */
} taps;

static taps *make_taps(int n_in, int n_out, int32_t **store) {
  double scale = (double)n_in / n_out, fs = scale < 1.0 ? 1.0 : scale, support = fs;
  int k = (int)ceil(support) * 2 + 1;
  taps *t = malloc(sizeof(taps) * (size_t)n_out);
  double *w = malloc(sizeof(double) * (size_t)k);
  *store = malloc(sizeof(int32_t) * (size_t)n_out * (size_t)k);
  if (!t || !w || !*store) {
    free(t);
    free(w);
    free(*store);
    return NULL;
  }
  for (int i = 0; i < n_out; i++) {
    double center = (i + 0.5) * scale, sum = 0;
    int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > n_in) hi = n_in;
    t[i].first = lo;
    t[i].count = hi - lo;
    t[i].w = *store + (size_t)i * (size_t)k;
    for (int j = 0; j < hi - lo; j++) {
      double x = fabs((j + lo - center + 0.5) / fs);
      w[j] = x < 1.0 ? 1.0 - x : 0.0;
      sum += w[j];
    }
    for (int j = 0; j < hi - lo; j++) t[i].w[j] = (int32_t)((sum != 0 ? w[j] / sum : w[j]) * (1 << FIX_BITS) + 0.5);
  }
  free(w);
  return t;
}

/* in (w_in x h, c channels) -> out (w_out x h), along rows; or along columns when vertical */
static bool resample(const gr_image *in, gr_image *out, int n_out, bool vertical) {
  int n_in = vertical ? in->h : in->w, c = in->c;
  int32_t *store;
  taps *t = make_taps(n_in, n_out, &store);
  if (!t || !alloc_image(out, vertical ? in->w : n_out, vertical ? n_out : in->h, c)) {
    free(t);
    if (t) free(store);
    return false;
  }
  for (int y = 0; y < out->h; y++)
    for (int x = 0; x < out->w; x++)
      for (int k = 0; k < c; k++) {
        const taps *tp = &t[vertical ? y : x];
        int64_t v = 1 << (FIX_BITS - 1);
        for (int j = 0; j < tp->count; j++) {
          int sx = vertical ? x : tp->first + j, sy = vertical ? tp->first + j : y;
          v += (int64_t)tp->w[j] * in->data[((size_t)sy * (size_t)in->w + (size_t)sx) * (size_t)c + (size_t)k];
        }
        v >>= FIX_BITS;
        out->data[((size_t)y * (size_t)out->w + (size_t)x) * (size_t)c + (size_t)k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
  free(t);
  free(store);
  return true;
}

bool gr_image_resize(const gr_image *in, int w, int h, gr_image *out) {
  memset(out, 0, sizeof *out);
  gr_image mid = {0};
  const gr_image *src = in;
  if (w != in->w) {
    if (!resample(in, &mid, w, false)) return false;
    src = &mid;
  }
  bool ok = true;
  if (h != in->h) {
    ok = resample(src, out, h, true);
    gr_image_free(&mid);
  } else if (src == &mid) {
    *out = mid;
  } else {
    ok = alloc_image(out, in->w, in->h, in->c);
    if (ok) memcpy(out->data, in->data, (size_t)in->w * (size_t)in->h * (size_t)in->c);
  }
  return ok;
}

void gr_image_resized_size(const gr_pixels *px, int w, int h, int *rw, int *rh) {
  *rw = w;
  *rh = h;
  if (px->resize_w > 0) {
    *rw = px->resize_w;
    *rh = px->resize_h;
  } else if (px->resize_h > 0) { /* the shorter side to resize_h, the longer in proportion (rounded down) */
    int s = px->resize_h;
    if (w <= h) {
      *rw = s;
      *rh = (int)((int64_t)s * h / w);
    } else {
      *rh = s;
      *rw = (int)((int64_t)s * w / h);
    }
  }
}

void gr_image_to_input(const gr_image *im, int top, int left, int out_h, int out_w, bool flip, const gr_pixels *px, float *out) {
  for (int k = 0; k < im->c; k++) {
    float scale = (float)(1.0 / (255.0 * px->std[k])), shift = (float)(px->mean[k] / px->std[k]);
    float *plane = out + (size_t)k * (size_t)out_h * (size_t)out_w;
    for (int y = 0; y < out_h; y++)
      for (int x = 0; x < out_w; x++) {
        int sx = left + (flip ? out_w - 1 - x : x);
        uint8_t v = im->data[((size_t)(top + y) * (size_t)im->w + (size_t)sx) * (size_t)im->c + (size_t)k];
        plane[(size_t)y * (size_t)out_w + (size_t)x] = (float)v * scale - shift;
      }
  }
}

/* ---- writing (tools and tests make image folders with these) ---- */

bool gr_image_write_png(const char *path, const gr_image *im, char *err, size_t err_size) {
  png_image pi;
  memset(&pi, 0, sizeof pi);
  pi.version = PNG_IMAGE_VERSION;
  pi.width = (png_uint_32)im->w;
  pi.height = (png_uint_32)im->h;
  pi.format = im->c == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&pi, path, 0, im->data, 0, NULL)) {
    snprintf(err, err_size, "cannot write PNG: %s", pi.message);
    return false;
  }
  return true;
}

bool gr_image_write_jpeg(const char *path, const gr_image *im, int quality, char *err, size_t err_size) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    snprintf(err, err_size, "cannot write: %s", strerror(errno));
    return false;
  }
  struct jpeg_compress_struct cinfo;
  jpeg_ctx ctx;
  cinfo.err = jpeg_std_error(&ctx.mgr);
  ctx.mgr.error_exit = jpeg_on_error;
  if (setjmp(ctx.jmp)) {
    snprintf(err, err_size, "cannot write JPEG");
    jpeg_destroy_compress(&cinfo);
    fclose(f);
    return false;
  }
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = (JDIMENSION)im->w;
  cinfo.image_height = (JDIMENSION)im->h;
  cinfo.input_components = im->c;
  cinfo.in_color_space = im->c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = im->data + (size_t)cinfo.next_scanline * (size_t)im->w * (size_t)im->c;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return fclose(f) == 0;
}
