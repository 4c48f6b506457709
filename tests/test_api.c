/* test_api.c — the embedding API (include/graft.h) driven as a program would drive it: a plan opened
 * and compiled, trained by epochs and by steps, evaluated, its outputs read, saved and loaded back
 * into a second model; and its error paths: each returns its status, reports through the callback
 * with the place, and leaves the model usable. The data are three Gaussian clusters in 4-D, which a
 * small MLP separates. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "graft.h"
#include "compiler/compiler.h"
#include "runtime/artifact.h"

static char dir[64];

typedef struct seen {
  int errors, warnings;
  char file[512], msg[2048];
  int line, col;
} seen;

static void on_diag(void *user, graft_diag_kind kind, const char *file, int line, int col, const char *msg) {
  seen *s = user;
  if (kind == GRAFT_DIAG_ERROR) {
    s->errors++;
    snprintf(s->file, sizeof s->file, "%s", file ? file : "");
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    s->line = line;
    s->col = col;
  } else if (kind == GRAFT_DIAG_WARNING) {
    s->warnings++;
  }
}

static void write_file(const char *name, const char *text) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static const char *path_of(const char *name) {
  static char buf[4][256];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

enum { N = 600, D = 4, C = 3 };
static float X[N * D];
static int32_t Y[N];

/* Three clusters around (+-2, ...) corners, fixed by a little LCG. */
static void make_data(void) {
  uint32_t r = 12345;
  for (int i = 0; i < N; i++) {
    Y[i] = i % C;
    for (int j = 0; j < D; j++) {
      r = r * 1664525u + 1013904223u;
      float noise = ((float)(r >> 8) / (float)(1 << 24) - 0.5f) * 1.5f;
      X[i * D + j] = (j == Y[i] ? 2.0f : -1.0f) + noise;
    }
  }
}

static int setup(void **state) {
  snprintf(dir, sizeof dir, "/tmp/graft-test-api-XXXXXX");
  assert_non_null(mkdtemp(dir));
  write_file("model.yaml", "name: tiny\ninput: {name: x, shape: [4]}\nlayers:\n"
                           "  - {name: fc1, op: linear, out_features: 16}\n  - {name: relu, op: relu}\n"
                           "  - {name: fc2, op: linear, out_features: 3}\n");
  write_file("plan.yaml", "model: model.yaml\ndata: {format: tensors, train: {file: unused.safetensors}}\nloss: cross_entropy\n"
                          "optimizer: {type: sgd, learning_rate: 0.1, momentum: 0.9}\nbatch_size: 32\nepochs: 8\nseed: 3\n");
  write_file("bad.yaml", "model: model.yaml\ndata: {format: tensors, train: {file: unused.safetensors}}\nloss: cross_entropy\n"
                         "optimizer: {type: sgd, learning_rate: 0.1}\nbatch_size: 32\nepohcs: 8\n");
  write_file("nan.yaml", "model: model.yaml\ndata: {format: tensors, train: {file: unused.safetensors}}\nloss: cross_entropy\n"
                         "optimizer: {type: sgd, learning_rate: 1.0e+6, momentum: 0.9}\nbatch_size: 32\nepochs: 1\n");
  make_data();
  (void)state;
  return 0;
}

static int teardown(void **state) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  (void)state;
  return system(cmd);
}

static graft_model *open_plan(const char *plan, seen *s) {
  graft_options o = {.diag = on_diag, .diag_user = s, .no_cache = 1};
  graft_model *m = NULL;
  assert_int_equal(graft_open_plan(path_of(plan), &o, &m), GRAFT_OK);
  assert_non_null(m);
  return m;
}

/* Trains to high accuracy; the sizes, the epoch counter and the learning rate are the plan's. */
static void train_evaluate_predict(void **state) {
  seen s = {0};
  graft_model *m = open_plan("plan.yaml", &s);
  assert_int_equal(graft_input_numel(m), D);
  assert_int_equal(graft_classes(m), C);
  assert_int_equal(graft_max_batch(m), 32);
  assert_int_equal(graft_target_numel(m), 0);
  assert_int_equal(graft_epochs(m), 8);
  assert_int_equal(graft_phases(m), 1);
  assert_true(fabs(graft_learning_rate(m) - 0.1) < 1e-12);
  double loss0, acc0, loss, acc;
  assert_int_equal(graft_evaluate(m, X, Y, N, &loss0, &acc0), GRAFT_OK);
  for (int e = 0; e < 8; e++) {
    float l;
    assert_int_equal(graft_train_epoch(m, X, Y, N, &l), GRAFT_OK);
    assert_true(isfinite(l));
  }
  assert_int_equal(graft_epoch(m), 8);
  assert_int_equal(graft_step(m), 8 * ((N + 31) / 32));
  assert_int_equal(graft_evaluate(m, X, Y, N, &loss, &acc), GRAFT_OK);
  assert_true(loss < loss0 / 4);
  assert_true(acc >= 0.95);
  /* predict's arg-max agrees with evaluate's accuracy */
  float *out = malloc(sizeof(float) * N * C);
  assert_int_equal(graft_predict(m, X, N, out), GRAFT_OK);
  int right = 0;
  for (int i = 0; i < N; i++) {
    int best = 0;
    for (int c = 1; c < C; c++) best = out[i * C + c] > out[i * C + best] ? c : best;
    right += best == Y[i];
  }
  assert_true(fabs((double)right / N - acc) < 1e-12);
  /* saved, and loaded into a fresh model: the same outputs */
  assert_int_equal(graft_save(m, path_of("w.safetensors")), GRAFT_OK);
  graft_model *m2 = open_plan("plan.yaml", &s);
  float *out2 = malloc(sizeof(float) * N * C);
  assert_int_equal(graft_predict(m2, X, N, out2), GRAFT_OK);
  assert_true(memcmp(out, out2, sizeof(float) * N * C) != 0); /* untrained differs */
  assert_int_equal(graft_load(m2, path_of("w.safetensors")), GRAFT_OK);
  assert_int_equal(graft_predict(m2, X, N, out2), GRAFT_OK);
  assert_memory_equal(out, out2, sizeof(float) * N * C);
  assert_int_equal(s.errors, 0);
  free(out);
  free(out2);
  graft_close(m);
  graft_close(m2);
  (void)state;
}

/* graft_train_step with graft_end_epoch takes the same steps as graft_train_epoch when fed the
 * batches in file order of a plan without shuffling: checked against each other on two models. */
static void steps_match_epochs(void **state) {
  write_file("ordered.yaml", "model: model.yaml\ndata: {format: tensors, train: {file: unused.safetensors}, shuffle: false}\n"
                             "loss: cross_entropy\noptimizer: {type: adam, learning_rate: 0.01}\n"
                             "schedule: {type: cosine, unit: step}\nbatch_size: 32\nepochs: 2\nseed: 3\n");
  seen s = {0};
  graft_model *a = open_plan("ordered.yaml", &s), *b = open_plan("ordered.yaml", &s);
  for (int e = 0; e < 2; e++) assert_int_equal(graft_train_epoch(a, X, Y, N, NULL), GRAFT_OK);
  float small_loss;
  assert_int_equal(graft_train_step(b, X, Y, 32, &small_loss), GRAFT_ERR_ARGUMENT); /* a per-step schedule: the epoch's size first */
  assert_int_equal(graft_step(b), 0);
  assert_int_equal(graft_set_train_size(b, N), GRAFT_OK);
  for (int e = 0; e < 2; e++) {
    for (int i = 0; i < N; i += 32) assert_int_equal(graft_train_step(b, X + i * D, Y + i, N - i < 32 ? N - i : 32, NULL), GRAFT_OK);
    assert_int_equal(graft_end_epoch(b), GRAFT_OK);
  }
  float oa[N * C], ob[N * C];
  assert_int_equal(graft_predict(a, X, N, oa), GRAFT_OK);
  assert_int_equal(graft_predict(b, X, N, ob), GRAFT_OK);
  assert_memory_equal(oa, ob, sizeof oa);
  assert_true(graft_learning_rate(a) < 1e-6); /* the cosine schedule ran to its end */
  graft_close(a);
  graft_close(b);
  (void)state;
}

/* Errors: the status, one diagnostic through the callback naming the place, and a model that still works. */
static void error_paths(void **state) {
  seen s = {0};
  graft_options o = {.diag = on_diag, .diag_user = &s, .no_cache = 1};
  graft_model *m = (graft_model *)1;
  /* a plan that does not exist; one with an unknown key (file:line:col) */
  assert_int_equal(graft_open_plan(path_of("missing.yaml"), &o, &m), GRAFT_ERR_INPUT);
  assert_null(m);
  assert_non_null(strstr(s.file, "missing.yaml"));
  memset(&s, 0, sizeof s);
  assert_int_equal(graft_open_plan(path_of("bad.yaml"), &o, &m), GRAFT_ERR_INPUT);
  assert_null(m);
  assert_non_null(strstr(s.file, "bad.yaml"));
  assert_int_equal(s.line, 6);
  assert_int_equal(s.col, 1);
  assert_non_null(strstr(s.msg, "epohcs"));
  assert_int_equal(graft_open_plan(NULL, &o, &m), GRAFT_ERR_ARGUMENT);
  assert_int_equal(graft_open_plan(path_of("plan.yaml"), &o, NULL), GRAFT_ERR_ARGUMENT);
  /* an artifact that is not one */
  graft_artifact fake = {0};
  assert_int_equal(graft_open_artifact(&fake, &o, &m), GRAFT_ERR_ARGUMENT);
  assert_null(m);
  fake.magic = 0x54465247;
  fake.abi = 999;
  assert_int_equal(graft_open_artifact(&fake, &o, &m), GRAFT_ERR_INPUT);
  assert_non_null(strstr(s.msg, "ABI 999"));
  static const unsigned char garbage[] = "GRAFTDSC\1\0\0\0 not a description";
  fake.abi = 1;
  fake.desc = garbage;
  fake.desc_size = sizeof garbage;
  assert_int_equal(graft_open_artifact(&fake, &o, &m), GRAFT_ERR_INPUT);
  assert_null(m);
  assert_non_null(strstr(s.msg, "description is damaged"));
  /* calls on a good model */
  m = open_plan("plan.yaml", &s);
  memset(&s, 0, sizeof s);
  float big[33 * D] = {0};
  int32_t labels[33] = {0};
  assert_int_equal(graft_train_step(m, big, labels, 33, NULL), GRAFT_ERR_ARGUMENT);
  assert_non_null(strstr(s.msg, "33 samples"));
  assert_int_equal(graft_train_step(m, big, labels, 0, NULL), GRAFT_ERR_ARGUMENT);
  assert_int_equal(graft_train_step(m, NULL, labels, 4, NULL), GRAFT_ERR_ARGUMENT);
  assert_int_equal(graft_evaluate(m, big, NULL, 4, NULL, NULL), GRAFT_ERR_ARGUMENT);
  assert_int_equal(graft_predict(m, big, 4, NULL), GRAFT_ERR_ARGUMENT);
  labels[2] = 3; /* not a class of a 3-class model */
  assert_int_equal(graft_train_step(m, big, labels, 4, NULL), GRAFT_ERR_INPUT);
  assert_non_null(strstr(s.msg, "label 3 of sample 2"));
  assert_int_equal(graft_evaluate(m, big, labels, 4, NULL, NULL), GRAFT_ERR_INPUT);
  assert_int_equal(graft_step(m), 0); /* nothing ran */
  assert_int_equal(graft_train_epoch(m, X, Y, N, NULL), GRAFT_OK);
  assert_int_equal(graft_train_epoch(m, X, Y, N - 1, NULL), GRAFT_ERR_ARGUMENT); /* the set changed size */
  /* files: a directory that does not exist; a truncated weights file; weights of another model */
  assert_int_equal(graft_save(m, path_of("no/such/dir/w.safetensors")), GRAFT_ERR_IO);
  assert_non_null(strstr(s.file, "no/such/dir"));
  assert_int_equal(graft_save(m, path_of("good.safetensors")), GRAFT_OK);
  FILE *f = fopen(path_of("good.safetensors"), "rb");
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  f = fopen(path_of("cut.safetensors"), "wb");
  fwrite(buf, 1, n / 2, f);
  fclose(f);
  assert_int_equal(graft_load(m, path_of("cut.safetensors")), GRAFT_ERR_INPUT);
  assert_non_null(strstr(s.file, "cut.safetensors"));
  assert_int_equal(graft_load(m, path_of("absent.safetensors")), GRAFT_ERR_INPUT);
  assert_int_equal(graft_save(NULL, "x"), GRAFT_ERR_ARGUMENT);
  assert_string_equal(graft_status_string(GRAFT_ERR_IO), "input/output error");
  /* still usable after all that */
  double loss, acc;
  assert_int_equal(graft_evaluate(m, X, Y, N, &loss, &acc), GRAFT_OK);
  assert_true(isfinite(loss));
  assert_non_null(strstr(graft_last_error(m), "absent.safetensors"));
  graft_close(m);
  /* a step whose loss overflows */
  m = open_plan("nan.yaml", &s);
  graft_status st = GRAFT_OK;
  for (int e = 0; e < 20 && st == GRAFT_OK; e++) st = graft_train_epoch(m, X, Y, N, NULL);
  assert_int_equal(st, GRAFT_ERR_NUMERIC);
  assert_true(strstr(s.msg, "made the loss NaN") || strstr(s.msg, "made the loss infinite"));
  graft_close(m);
  graft_close(NULL);
  (void)state;
}

static void ignore(void *user, gr_diag_kind kind, gr_loc loc, const char *msg) {}

/* The description graft compile embeds reads back whole, and every damaged copy of it (each byte
 * changed, every truncation) is refused, never trusted or crashed on (ASan runs this too). */
static void artifact_description_mutations(void **state) {
  write_file("phases.yaml", "model: model.yaml\ndata: {format: tensors, train: {file: unused.safetensors}}\nloss: cross_entropy\n"
                            "optimizer: {type: adam, learning_rate: 0.01}\nfreeze: [fc1]\nphases: [{epochs: 1}, {epochs: 2, unfreeze: fc1}]\n"
                            "batch_size: 16\nseed: 5\n");
  gr_diag d;
  gr_diag_init(&d);
  d.sink = ignore;
  gr_plan_build b;
  assert_true(gr_build_plan(path_of("phases.yaml"), &d, &(gr_compile_opts){.stop_before_codegen = true}, &b));
  gr_step_fn steps[8];
  for (int i = 0; i < 8; i++) steps[i] = (gr_step_fn)(uintptr_t)(0x1000 + i); /* never called */
  for (int k = 0; k < b.n; k++) /* as graft compile's table has them */
    for (int p = 0; p < 2; p++) ((gr_rt_program *)gr_artifact_program(&b.c[k].rt, p))->fn = steps[4 * k + p];
  gr_artifact_info info = {"tiny", "x86-64", "+avx2"};
  size_t size;
  uint8_t *desc = gr_artifact_encode(&b.run, &info, &size);
  gr_arena a;
  gr_arena_init(&a);
  gr_run run;
  gr_artifact_info back;
  assert_true(gr_artifact_decode(desc, size, steps, 8, &a, &run, &back, &d));
  assert_int_equal(run.n_phases, 2);
  assert_int_equal(run.phases[1].epochs, 2);
  assert_int_equal(run.seed, 5);
  assert_string_equal(back.features, "+avx2");
  assert_ptr_equal(run.phases[1].m->train.fn, steps[4]);
  assert_int_equal(run.phases[1].m->n_params, b.c[1].rt.n_params);
  assert_string_equal(run.phases[1].m->params[1].name, b.c[1].rt.params[1].name);
  gr_arena_free(&a);
  int accepted = 0;
  uint8_t *copy = malloc(size);
  for (size_t i = 0; i < size; i++) {
    static const uint8_t flips[] = {0x01, 0x80, 0xff};
    for (int f = 0; f < 3; f++) {
      memcpy(copy, desc, size);
      copy[i] ^= flips[f];
      gr_arena_init(&a);
      accepted += gr_artifact_decode(copy, size, steps, 8, &a, &run, &back, &d); /* a float or an unchecked name may still be fine */
      gr_arena_free(&a);
    }
  }
  for (size_t n = 0; n < size; n++) {
    gr_arena_init(&a);
    assert_false(gr_artifact_decode(desc, n, steps, 8, &a, &run, &back, &d));
    gr_arena_free(&a);
  }
  assert_true(accepted < (int)size * 3);
  free(copy);
  free(desc);
  gr_plan_build_free(&b);
  gr_diag_free(&d);
  (void)state;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(train_evaluate_predict),
      cmocka_unit_test(steps_match_epochs),
      cmocka_unit_test(error_paths),
      cmocka_unit_test(artifact_description_mutations),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
