/* image.h — images as model input: decoding PNG and JPEG files, and the per-sample transforms of an
 * image-folder data set (resize, centre or random crop, horizontal flip, per-channel normalisation),
 * computed as torchvision does them on PIL images so that a model trained in either place sees the
 * same input. The decoders take no part of their behaviour from the file beyond its pixels: a file
 * that is not a well-formed PNG or JPEG is an error naming it. */
#ifndef GRAFT_IMAGE_H
#define GRAFT_IMAGE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How pixels become model input: input = (pixel/255 - mean[c]) / std[c] for channel c (IDX images
 * use channel 0). Image folders also resize and crop: resize_h x resize_w exactly, or with resize_w
 * 0 the shorter side to resize_h keeping the aspect ratio (torchvision Resize(int)), or with both 0
 * not at all; then a crop to the model's input size, centred, or at a random place in training with
 * random_crop; flip mirrors a training image left-right with probability 1/2. */
typedef struct gr_pixels {
  double mean[3], std[3];
  int resize_h, resize_w;
  bool random_crop, flip;
} gr_pixels;

/* Decoded 8-bit pixels, interleaved: data[(y * w + x) * c + k]. */
typedef struct gr_image {
  int w, h, c; /* c: 1 (grey) or 3 (RGB) */
  uint8_t *data;
} gr_image;

#ifdef GRAFT_FUZZING /* fuzz builds: the same checks at lower caps, so that an execution stays fast */
enum { GR_IMAGE_MAX_SIDE = 4096, GR_IMAGE_MAX_PIXELS = 1 << 20 };
#else
#ifdef GRAFT_FUZZING /* fuzz builds (GRAFT_FUZZ): the same checks at lower caps, so that each execution stays fast */
enum { GR_IMAGE_MAX_SIDE = 4096, GR_IMAGE_MAX_PIXELS = 1 << 20 };
#else
enum { GR_IMAGE_MAX_SIDE = 16384, GR_IMAGE_MAX_PIXELS = 1 << 26 }; /* 16384 on a side, 64 Mpixels in all */
#endif
#endif

/* Decodes a PNG or JPEG file (told apart by their first bytes) into `channels` (1 or 3) channels:
 * colour to grey as PIL's convert('L') does, grey to colour by copying, alpha dropped. Returns false
 * with a message in err (without the file name) for a file that cannot be read, is neither format,
 * is truncated or corrupt, or is larger than GR_IMAGE_MAX_SIDE on a side or GR_IMAGE_MAX_PIXELS in all
 * (a header claiming more is refused before any memory is taken for it). */
bool gr_image_read(const char *path, int channels, gr_image *out, char *err, size_t err_size);
void gr_image_free(gr_image *im);
/* Antialiased bilinear resampling to w x h, bit for bit PIL's Image.resize(BILINEAR) on 8-bit images:
 * width first, then height, each pass in fixed point and rounded to 8 bits. */
bool gr_image_resize(const gr_image *in, int w, int h, gr_image *out);
/* The size an image of w x h gets from px's resize (itself when px resizes nothing). */
void gr_image_resized_size(const gr_pixels *px, int w, int h, int *rw, int *rh);
/* The model input of one image: the out_h x out_w window at (top, left), mirrored if flip, as
 * normalised floats in CHW order. The window must lie inside the image. */
void gr_image_to_input(const gr_image *im, int top, int left, int out_h, int out_w, bool flip, const gr_pixels *px, float *out);
/* Writes 8-bit grey or RGB pixels as a PNG file, or as a JPEG file of the given quality (1-100). */
bool gr_image_write_png(const char *path, const gr_image *im, char *err, size_t err_size);
bool gr_image_write_jpeg(const char *path, const gr_image *im, int quality, char *err, size_t err_size);

#endif
