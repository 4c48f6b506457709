/* main.c — the ahead-of-time example: a plain C program that fine-tunes a plan `graft compile`
 * compiled (its header net.h, its library libnet.a) on Fashion-MNIST, with graft's runtime library
 * alone: no LLVM, no libyaml, no YAML files. It reads the IDX files itself (zlib for the .gz ones),
 * takes the classes and per-class count the plan names, normalises pixels as the header says, trains
 * the plan's epochs through graft.h, prints the test accuracy after every epoch and saves the weights.
 *
 *   usage: aot_example TRAIN_IMAGES TRAIN_LABELS TEST_IMAGES TEST_LABELS [--save FILE] [--epochs N]
 *                      [--classes 5,6,7,8,9] [--per-class N] [--threads N]
 *
 * Exit status 0 on success, 1 on any error (with a message on stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "net.h"

/* An IDX file (optionally gzip'd) of unsigned bytes: its count along dimension 0 and the bytes. */
static unsigned char *read_idx(const char *path, int dims_expected, long *count, long *row) {
  gzFile f = gzopen(path, "rb");
  unsigned char head[4], d[4];
  if (!f) {
    fprintf(stderr, "%s: cannot open it\n", path);
    return NULL;
  }
  if (gzread(f, head, 4) != 4 || head[0] || head[1] || head[2] != 0x08 || head[3] != dims_expected) {
    fprintf(stderr, "%s: not an IDX file of %d-dimensional unsigned bytes\n", path, dims_expected);
    gzclose(f);
    return NULL;
  }
  long n = 1, r = 1;
  for (int k = 0; k < dims_expected; k++) {
    if (gzread(f, d, 4) != 4) {
      fprintf(stderr, "%s: truncated header\n", path);
      gzclose(f);
      return NULL;
    }
    long v = (long)d[0] << 24 | (long)d[1] << 16 | (long)d[2] << 8 | d[3];
    if (k == 0) n = v; else r *= v;
  }
  unsigned char *data = malloc((size_t)(n * r) + 1);
  if (!data || gzread(f, data, (unsigned)(n * r)) != (int)(n * r)) {
    fprintf(stderr, "%s: truncated: %ld samples of %ld bytes expected\n", path, n, r);
    free(data);
    gzclose(f);
    return NULL;
  }
  gzclose(f);
  *count = n;
  *row = r;
  return data;
}

typedef struct set {
  long n;
  float *x;
  int32_t *y;
} set;

/* The samples whose label is one of classes[] (relabelled to its index there), at most per_class of
 * each (0: all), in file order; pixels normalised as the plan says. */
static int load(set *s, const char *images, const char *labels, const int *classes, int n_classes, long per_class) {
  long n, row, nl, one;
  unsigned char *px = read_idx(images, 3, &n, &row), *lb = px ? read_idx(labels, 1, &nl, &one) : NULL;
  if (!lb) return free(px), 0;
  if (nl != n || row != NET_INPUT_NUMEL) {
    fprintf(stderr, "%s: %ld images of %ld pixels for %ld labels; the model takes %d pixels\n", images, n, row, nl, NET_INPUT_NUMEL);
    return free(px), free(lb), 0;
  }
  const float scale[] = NET_PIXEL_SCALE, shift[] = NET_PIXEL_SHIFT;
  s->x = malloc(sizeof(float) * (size_t)(n * row));
  s->y = malloc(sizeof(int32_t) * (size_t)n);
  long taken[256] = {0};
  s->n = 0;
  for (long i = 0; i < n; i++) {
    int k = 0;
    while (k < n_classes && classes[k] != lb[i]) k++;
    if (k == n_classes || (per_class && taken[k] == per_class)) continue;
    taken[k]++;
    for (long j = 0; j < row; j++) s->x[s->n * row + j] = (float)px[i * row + j] * scale[0] - shift[0];
    s->y[s->n++] = k;
  }
  free(px);
  free(lb);
  return 1;
}

static void on_diag(void *user, graft_diag_kind kind, const char *file, int line, int col, const char *msg) {
  (void)user;
  static const char *const what[] = {"error", "warning", "note"};
  if (file) fprintf(stderr, "%s:%d:%d: ", file, line, col);
  fprintf(stderr, "%s: %s\n", what[kind], msg);
}

int main(int argc, char **argv) {
  const char *save = NULL;
  int classes[256], n_classes = 0, threads = 0;
  long per_class = 0, epochs = NET_EPOCHS;
  for (int i = 5; i < argc; i++) {
    if (!strcmp(argv[i], "--save") && i + 1 < argc) save = argv[++i];
    else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atol(argv[++i]);
    else if (!strcmp(argv[i], "--per-class") && i + 1 < argc) per_class = atol(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--classes") && i + 1 < argc)
      for (char *p = argv[++i]; *p && n_classes < 256; p += *p == ',') classes[n_classes++] = (int)strtol(p, &p, 10);
    else argc = 0; /* usage */
  }
  if (argc < 5) {
    fprintf(stderr, "usage: %s TRAIN_IMAGES TRAIN_LABELS TEST_IMAGES TEST_LABELS [--save FILE] [--epochs N] [--classes 5,6,7] "
                    "[--per-class N] [--threads N]\n", argv[0]);
    return 1;
  }
  if (!n_classes)
    for (; n_classes < NET_CLASSES; n_classes++) classes[n_classes] = n_classes;
  set train, test;
  if (!load(&train, argv[1], argv[2], classes, n_classes, per_class) || !load(&test, argv[3], argv[4], classes, n_classes, 0)) return 1;
  graft_options opts = {.diag = on_diag, .threads = threads};
  graft_model *m;
  if (net_open(&opts, &m) != GRAFT_OK) return 1;
  printf("%ld training and %ld test images, %d classes; %ld epochs in %d phase(s), batch %lld\n", train.n, test.n, n_classes, epochs,
         graft_phases(m), (long long)graft_max_batch(m));
  graft_status st = GRAFT_OK;
  double loss, acc = 0;
  for (long e = 0; e < epochs && st == GRAFT_OK; e++) {
    float train_loss;
    double lr = graft_learning_rate(m);
    int phase = graft_phase(m);
    st = graft_train_epoch(m, train.x, train.y, train.n, &train_loss);
    if (st == GRAFT_OK) st = graft_evaluate(m, test.x, test.y, test.n, &loss, &acc);
    if (st == GRAFT_OK)
      printf("epoch %ld (phase %d, lr %.4g): train loss %.4f, test loss %.4f, test accuracy %.4f\n", e + 1, phase + 1, lr, train_loss, loss, acc);
  }
  if (st == GRAFT_OK) printf("final test accuracy: %.4f\n", acc);
  if (st == GRAFT_OK && save) {
    st = graft_save(m, save);
    if (st == GRAFT_OK) printf("saved the weights to %s\n", save);
  }
  if (st != GRAFT_OK) fprintf(stderr, "%s: %s\n", argv[0], graft_status_string(st));
  graft_close(m);
  free(train.x), free(train.y), free(test.x), free(test.y);
  return st == GRAFT_OK ? 0 : 1;
}
