/* test_gemm.c — graft's GEMM (runtime/gemm.c) against OpenBLAS, and the thread pool (runtime/pool.c).
 *
 * The GEMM: every combination of transposes, beta 0 / 1 / 0.5, leading dimensions wider than the
 * matrix, sizes around the micro-kernels' 12 x 32 and 6 x 16 tiles and the 256-deep, 120-row and 1536-column
 * blocks, few outputs over a long K (the dot-product kernel), K = 0; C filled with NaN where beta is 0 must not leak NaN (BLAS does not read C then).
 * Results agree with cblas_sgemm within float rounding of the dot products, and are bit-identical
 * at 1, 2 and 3 threads; with B packed by a caller's function (gr_sgemm_cb), the same bits as on the
 * stored B. Every check runs with each of graft's kernels this CPU can run (AVX-512, AVX2), and the
 * two give the same bits where both can run. The pool: every part runs once, nested calls run inline, and thousands of
 * back-to-back jobs (the pattern of a training step) all complete. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/runtime.h"

static float urand(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((*s >> 40) / 16777216.0 - 0.5);
}

/* One product, checked against OpenBLAS: |C - ref| <= 1e-5 (sum_k |a||b| + |beta c|) + 1e-30. */
static void check_one(int ta, int tb, int M, int N, int K, float beta, int pad, uint64_t seed) {
  int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
  size_t na = (size_t)(ta ? K : M) * (size_t)lda + 1, nb = (size_t)(tb ? N : K) * (size_t)ldb + 1, nc = (size_t)M * (size_t)ldc + 1;
  float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B), *C = malloc(nc * sizeof *C), *R = malloc(nc * sizeof *R);
  assert_non_null(A), assert_non_null(B), assert_non_null(C), assert_non_null(R);
  for (size_t i = 0; i < na; i++) A[i] = urand(&seed);
  for (size_t i = 0; i < nb; i++) B[i] = urand(&seed);
  for (size_t i = 0; i < nc; i++) R[i] = C[i] = beta == 0 ? NAN : urand(&seed);
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta,
              R, ldc);
  gr_sgemm(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double mag = 0;
      for (int k = 0; k < K; k++) mag += fabs(A[ta ? k * lda + i : i * lda + k] * B[tb ? j * ldb + k : k * ldb + j]);
      float got = C[(size_t)i * ldc + j], want = R[(size_t)i * ldc + j];
      mag += beta != 0 ? fabs(beta * want) : 0;
      if (!(fabs(got - want) <= 1e-5 * mag + 1e-30)) {
        fprintf(stderr, "ta %d tb %d %dx%dx%d beta %g pad %d: C[%d,%d] = %.9g, OpenBLAS %.9g\n", ta, tb, M, N, K, beta, pad, i, j,
                got, want);
        fail();
      }
    }
  /* the padding columns of C are untouched */
  for (int i = 0; i < M; i++)
    for (int j = N; j < ldc; j++) {
      float got = C[(size_t)i * ldc + j], want = R[(size_t)i * ldc + j];
      assert_true(memcmp(&got, &want, sizeof got) == 0);
    }
  free(A), free(B), free(C), free(R);
}

/* graft's kernels this CPU can run, each switched to in turn by for_each_kernel. */
static const char *const kernels[] = {"avx512", "avx2"};
#define for_each_kernel(k)                                                                                  \
  for (int k = 0; k < 2; k++)                                                                               \
    if (!gr_gemm_use(kernels[k])) fprintf(stderr, "skip %s: this CPU cannot run it\n", kernels[k]);       \
    else

static void against_openblas(void) {
  fprintf(stderr, "gemm: %s\n", gr_gemm_kind());
  static const int dims[][3] = {{1, 1, 1},   {12, 32, 7},   {13, 33, 8},   {11, 31, 9},    {24, 64, 256}, {25, 65, 257},
                                {121, 40, 3}, {5, 1537, 17}, {64, 576, 300}, {300, 20, 600}, {7, 3, 0},     {40, 100, 1},
                                /* every count of rows left over by the AVX2 kernel's 6-row tiles (M mod 6 = 2, 3; 128 = 120 + 8) */
                                {14, 20, 30}, {9, 50, 70}, {128, 40, 20},
                                /* few outputs, long K: the dot-product kernel (K past its 2048 block) */
                                {32, 9, 3000}, {5, 3, 2049},  {1, 1, 1024}, {7, 6, 1039} /* a tail of 15: both halves of 16 lanes */};
  static const float betas[] = {0, 1, 0.5f};
  uint64_t seed = 1;
  for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
    for (int t = 0; t < 4; t++)
      for (int b = 0; b < 3; b++) check_one(t & 1, t >> 1, dims[d][0], dims[d][1], dims[d][2], betas[b], (int)(d % 3) * 3, seed++);
}

static void test_against_openblas(void **state) {
  (void)state;
  int ran = 0;
  for_each_kernel(k) against_openblas(), ran++;
  if (!ran) fprintf(stderr, "skip: this CPU has neither AVX-512 nor AVX2 with FMA; OpenBLAS serves every product\n");
}

/* The AVX-512 and AVX2 kernels give the same bits on every path: the packed tiles (edges, several
 * depth blocks, beta 0 / 0.5, both transposes of A), and the dot-product kernel (a tail of 1, 9 and
 * 15 past a multiple of 16, a second depth block). */
static void test_kernels_agree(void **state) {
  (void)state;
  if (!gr_gemm_use("avx512")) {
    fprintf(stderr, "skip: this CPU cannot run the AVX-512 kernel to compare the AVX2 one with\n");
    return;
  }
  static const int dims[][3] = {{25, 65, 257}, {121, 40, 600}, {5, 1537, 17}, {32, 9, 3000}, {5, 3, 2049}, {7, 6, 1033}, {3, 3, 1039}};
  for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
    for (int t = 0; t < 4; t++) {
      int M = dims[d][0], N = dims[d][1], K = dims[d][2], ta = t & 1, tb = t >> 1;
      float beta = t == 3 ? 0.5f : 0;
      float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C[2];
      uint64_t seed = 5 + d;
      for (int i = 0; i < M * K; i++) A[i] = urand(&seed);
      for (int i = 0; i < K * N; i++) B[i] = urand(&seed);
      for (int k = 0; k < 2; k++) {
        assert_true(gr_gemm_use(kernels[k]));
        C[k] = malloc(sizeof(float) * M * N);
        uint64_t cs = 99;
        for (int i = 0; i < M * N; i++) C[k][i] = urand(&cs);
        gr_sgemm(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, beta, C[k], N);
      }
      assert_memory_equal(C[0], C[1], sizeof(float) * M * N);
      free(C[0]), free(C[1]), free(A), free(B);
    }
}

/* The same product at 1, 2 and 3 threads: the same bits; split by columns (wide) and by rows (tall).
 * The shares are cut at tiles: with the AVX2 kernel, 3 threads start shares inside a packed panel
 * (column 464 of 700, row 234 of 700). */
static void test_thread_count_invariant(void **state) {
  (void)state;
  static const int dims[][3] = {{200, 700, 333}, {700, 200, 333}};
  for_each_kernel(kernel) for (int d = 0; d < 2; d++) {
    int M = dims[d][0], N = dims[d][1], K = dims[d][2];
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C[3];
    uint64_t seed = 7;
    for (int i = 0; i < M * K; i++) A[i] = urand(&seed);
    for (int i = 0; i < K * N; i++) B[i] = urand(&seed);
    for (int t = 0; t < 3; t++) {
      gr_set_threads(t + 1);
      C[t] = malloc(sizeof(float) * M * N);
      gr_sgemm(0, 1, M, N, K, A, K, B, K, 0, C[t], N);
    }
    assert_memory_equal(C[0], C[1], sizeof(float) * M * N);
    assert_memory_equal(C[0], C[2], sizeof(float) * M * N);
    gr_set_threads(0);
    for (int t = 0; t < 3; t++) free(C[t]);
    free(A), free(B);
  }
}

/* A pack function over a stored row-major B (K x N, leading dimension N), as gr_sgemm_cb asks: the
 * block [k0, k0 + kc) x [n0, n0 + nc) in 32-column panels, zeros past N. It checks the contract's
 * promises on the way (n0 a multiple of 32, the block inside B) and counts the elements it packs. */
typedef struct {
  const float *B;
  int64_t K, N;
  _Atomic long packed;
} stored_b;

static void pack_stored(void *ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, void *bp) {
  stored_b *sb = ctx;
  float *out = bp;
  assert_true(n0 % 32 == 0 && n0 >= 0 && nc > 0 && n0 + nc <= sb->N && k0 >= 0 && kc >= 0 && k0 + kc <= sb->K);
  for (int64_t q = 0; q < nc; q += 32)
    for (int64_t k = 0; k < kc; k++)
      for (int64_t j = 0; j < 32; j++) out[q * kc + k * 32 + j] = q + j < nc ? sb->B[(k0 + k) * sb->N + n0 + q + j] : 0;
  atomic_fetch_add(&sb->packed, (long)(kc * nc));
}

/* gr_sgemm_cb with B packed by a function gives gr_sgemm's bits on the stored B: wide and tall products
 * (split by columns and by rows), several depth and column blocks, N not a multiple of 32, at 1 and 2
 * threads; every element of B is packed exactly once per use (each part its own blocks). */
static void test_packed_b(void **state) {
  (void)state;
  static const int dims[][3] = {{64, 2000, 600}, {700, 100, 300}, {13, 45, 7}, {24, 33, 0}};
  for_each_kernel(kernel) for (int d = 0; d < 4; d++)
    for (int t = 1; t <= 2; t++) {
      int M = dims[d][0], N = dims[d][1], K = dims[d][2];
      float *A = malloc(sizeof(float) * (M * K + 1)), *B = malloc(sizeof(float) * (K * N + 1));
      float *C = malloc(sizeof(float) * M * N), *R = malloc(sizeof(float) * M * N);
      uint64_t seed = 11;
      for (int i = 0; i < M * K; i++) A[i] = urand(&seed);
      for (int i = 0; i < K * N; i++) B[i] = urand(&seed);
      for (int i = 0; i < M * N; i++) C[i] = R[i] = urand(&seed);
      gr_set_threads(t);
      gr_sgemm(0, 0, M, N, K, A, K, B, N, 0.5f, R, N);
      stored_b sb = {.B = B, .K = K, .N = N};
      gr_sgemm_cb(0, M, N, K, A, K, pack_stored, &sb, 0.5f, C, N);
      assert_memory_equal(C, R, sizeof(float) * M * N);
      assert_true(atomic_load(&sb.packed) >= (long)K * N);
      free(A), free(B), free(C), free(R);
    }
  gr_set_threads(0);
}

typedef struct {
  _Atomic int runs[64];
  _Atomic long total;
} pool_probe;

static void mark_part(void *ctx, int64_t p, int64_t parts) {
  pool_probe *pr = ctx;
  assert_true(p >= 0 && p < parts);
  atomic_fetch_add(&pr->runs[p], 1);
}

static void nested_part(void *ctx, int64_t p, int64_t parts) {
  pool_probe *pr = ctx;
  (void)p, (void)parts;
  pool_probe inner = {0};
  gr_parallel(mark_part, &inner, 5); /* from inside a part: runs inline */
  for (int i = 0; i < 5; i++) assert_int_equal(atomic_load(&inner.runs[i]), 1);
  atomic_fetch_add(&pr->total, 1);
}

static void add_part(void *ctx, int64_t p, int64_t parts) {
  pool_probe *pr = ctx;
  atomic_fetch_add(&pr->total, p + 1);
  (void)parts;
}

static void test_pool(void **state) {
  (void)state;
  gr_set_threads(3);
  for (int parts = 1; parts <= 64; parts++) {
    pool_probe pr = {0};
    gr_parallel(mark_part, &pr, parts);
    for (int i = 0; i < 64; i++) assert_int_equal(atomic_load(&pr.runs[i]), i < parts ? 1 : 0);
  }
  pool_probe pr = {0};
  gr_parallel(nested_part, &pr, 8);
  assert_int_equal(atomic_load(&pr.total), 8);
  /* back-to-back jobs, as a step's kernels: every one completes before the next starts */
  gr_set_threads(2);
  for (int job = 0; job < 20000; job++) {
    pool_probe q = {0};
    gr_parallel(add_part, &q, 3);
    assert_int_equal(atomic_load(&q.total), 6);
  }
  /* gr_parallel_for: a large loop is split, a small one runs in the caller; all parts run */
  pool_probe big = {0}, small = {0};
  gr_parallel_for(mark_part, &big, 1000, 1000);
  gr_parallel_for(mark_part, &small, 4, 1);
  int nbig = 0;
  for (int i = 0; i < 64; i++) nbig += atomic_load(&big.runs[i]);
  assert_int_equal(nbig, gr_threads());
  assert_int_equal(atomic_load(&small.runs[0]), 1);
  assert_int_equal(atomic_load(&small.runs[1]), 0);
  gr_set_threads(0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_against_openblas),
      cmocka_unit_test(test_kernels_agree),
      cmocka_unit_test(test_thread_count_invariant),
      cmocka_unit_test(test_packed_b),
      cmocka_unit_test(test_pool),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
