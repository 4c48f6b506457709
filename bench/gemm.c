/* gemm.c — graft's GEMM (runtime/gemm.c) against OpenBLAS's, on the matrix products of a ResNet-18
 * training step (3x64x64 images, batch 64: the convolutions' forward, input-gradient and
 * weight-gradient GEMMs, chunked as graft's kernels chunk them), and the machine's FMA peak.
 *
 * The peak is measured, not assumed: independent chains of fused multiply-adds per thread (24 with
 * AVX-512, 12 with AVX2: enough to cover the FMA latency on both of a core's FMA units), on 1 and
 * on T threads, with the widest vectors graft's GEMM uses here. Each GEMM runs for at least half a
 * second per side, alternating graft and OpenBLAS; the table gives GFLOP/s, graft's share of the
 * peak and the ratio. On an AVX-512 CPU it also runs graft's AVX2 kernel (GRAFT_GEMM=avx2's) as a
 * third column. A benchmark, not a test (bench/, docs/benchmarks.md).
 *
 * usage: build/bench_gemm [--peak] [THREADS]  (default: every CPU; --peak: print only the peak on
 * THREADS threads, in GFLOP/s, for scripts: bench/threads.sh) */
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "runtime/runtime.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* GFLOP/s of one thread doing FMAs on 24 independent accumulators for about `secs` seconds. */
__attribute__((target("avx512f,fma"))) static double fma_peak_avx512(double secs) {
  __m512 acc[24], m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps((float)i);
  long iters = 0;
  double t0 = now(), t;
  do {
    for (int r = 0; r < 1000; r++)
#pragma GCC unroll 24
      for (int i = 0; i < 24; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
    iters += 1000;
  } while ((t = now() - t0) < secs);
  float sink = 0;
  for (int i = 0; i < 24; i++) sink += _mm512_reduce_add_ps(acc[i]);
  if (sink == 12345.f) puts("");
  return (double)iters * 24 * 16 * 2 / t / 1e9;
}

/* The same with AVX2: 12 chains of 8 lanes. */
__attribute__((target("avx2,fma"))) static double fma_peak_avx2(double secs) {
  __m256 acc[12], m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
  long iters = 0;
  double t0 = now(), t;
  do {
    for (int r = 0; r < 1000; r++)
#pragma GCC unroll 12
      for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, a);
    iters += 1000;
  } while ((t = now() - t0) < secs);
  float sink = 0, v[8];
  for (int i = 0; i < 12; i++) {
    _mm256_storeu_ps(v, acc[i]);
    for (int l = 0; l < 8; l++) sink += v[l];
  }
  if (sink == 12345.f) puts("");
  return (double)iters * 12 * 8 * 2 / t / 1e9;
}

static bool avx512;
static double peak_one(void) { return avx512 ? fma_peak_avx512(0.5) : fma_peak_avx2(0.5); }
static void *peak_thread(void *out) {
  *(double *)out = peak_one();
  return NULL;
}

/* The FMA peak of `threads` threads running at once. */
static double fma_peak(int threads) {
  pthread_t t[64];
  double r[64] = {0}, sum = 0;
  for (int i = 1; i < threads && i < 64; i++) pthread_create(&t[i], NULL, peak_thread, &r[i]);
  r[0] = peak_one();
  for (int i = 1; i < threads && i < 64; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < threads && i < 64; i++) sum += r[i];
  return sum;
}

typedef struct shape {
  const char *what;
  int ta, tb, M, N, K;
} shape;

/* ResNet-18, 3x64x64, batch 64; N or K is (samples per chunk) x Ho x Wo, with the chunks the
 * kernels take for GR_CONV_STAGING = 2 Mi floats (8, 11, 22, 32 and 64 samples for conv1 and layers
 * 1-4: gr_conv_chunk's bound, then the batch cut into equal chunks). */
static const shape shapes[] = {
    {"conv1 7x7 forward", 0, 0, 64, 8 * 1024, 147},
    {"conv1 7x7 weight grad", 0, 1, 64, 147, 8 * 1024},
    {"layer1 3x3 forward", 0, 0, 64, 11 * 256, 576},
    {"layer1 3x3 input grad", 1, 0, 576, 11 * 256, 64},
    {"layer1 3x3 weight grad", 0, 1, 64, 576, 11 * 256},
    {"layer2 3x3 forward", 0, 0, 128, 22 * 64, 1152},
    {"layer2 3x3 input grad", 1, 0, 1152, 22 * 64, 128},
    {"layer2 3x3 weight grad", 0, 1, 128, 1152, 22 * 64},
    {"layer3 3x3 forward", 0, 0, 256, 32 * 16, 2304},
    {"layer3 3x3 weight grad", 0, 1, 256, 2304, 32 * 16},
    {"layer4 3x3 forward", 0, 0, 512, 64 * 4, 4608},
    {"layer4 3x3 input grad", 1, 0, 4608, 64 * 4, 512},
    {"layer4 3x3 weight grad", 0, 1, 512, 4608, 64 * 4},
    {"fc forward", 0, 1, 64, 1000, 512},
};

/* own: 0 OpenBLAS, 1 graft's default kernel, 2 graft's AVX2 kernel (on an AVX-512 CPU). */
static double rate(int own, const shape *s, const float *A, const float *B, float *C) {
  int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
  if (own) gr_gemm_use(own == 2 || !avx512 ? "avx2" : "avx512");
  long reps = 0;
  double t0 = now(), t;
  do {
    if (own)
      gr_sgemm(s->ta, s->tb, s->M, s->N, s->K, A, lda, B, ldb, 0, C, s->N);
    else
      cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->M, s->N, s->K, 1, A, lda, B,
                  ldb, 0, C, s->N);
    reps++;
  } while ((t = now() - t0) < 0.5);
  return 2.0 * s->M * s->N * s->K * (double)reps / t / 1e9;
}

static void sort3(double *v) {
  for (int a = 0; a < 3; a++)
    for (int b = a + 1; b < 3; b++)
      if (v[b] < v[a]) { double x = v[a]; v[a] = v[b]; v[b] = x; }
}

int main(int argc, char **argv) {
  bool peak_only = argc > 1 && !strcmp(argv[1], "--peak");
  int threads = argc > 1 + peak_only ? atoi(argv[1 + peak_only]) : 0;
  avx512 = gr_gemm_use("avx512");
  if (!avx512 && !gr_gemm_use("avx2")) {
    printf("neither AVX-512 nor AVX2 with FMA on this CPU: graft's GEMM is OpenBLAS here (%s), nothing to compare\n", gr_gemm_kind());
    return peak_only ? 1 : 0;
  }
  const char *isa = avx512 ? "AVX-512" : "AVX2";
  gr_set_threads(threads);
  threads = gr_threads();
  double pt = fma_peak(threads);
  if (peak_only) return printf("%.0f\n", pt) < 0;
  printf("FMA peak (%s): %.0f GFLOP/s on 1 thread, %.0f on %d\n", isa, fma_peak(1), pt, threads);
  printf("graft's GEMM: %s\n\n", gr_gemm_kind());
  printf("| product | M x N x K | graft GFLOP/s | %% of peak | OpenBLAS GFLOP/s | graft / OpenBLAS |%s\n|---|---|---|---|---|---|%s\n",
         avx512 ? " graft AVX2 GFLOP/s |" : "", avx512 ? "---|" : "");
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const shape *s = &shapes[i];
    size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
    float *A = malloc(na * 4), *B = malloc(nb * 4), *C = malloc(nc * 4);
    if (!A || !B || !C) return 1;
    for (size_t k = 0; k < na; k++) A[k] = (float)((k * 7919) % 1000) / 1000.0f - 0.5f;
    for (size_t k = 0; k < nb; k++) B[k] = (float)((k * 104729) % 1000) / 1000.0f - 0.5f;
    double own[3], blas[3], own2[3];
    for (int r = 0; r < 3; r++) { /* medians of 3 alternating runs */
      own[r] = rate(1, s, A, B, C), blas[r] = rate(0, s, A, B, C);
      if (avx512) own2[r] = rate(2, s, A, B, C);
    }
    sort3(own), sort3(blas);
    printf("| %s | %d x %d x %d%s%s | %.0f | %.0f%% | %.0f | %.2f× |", s->what, s->M, s->N, s->K, s->ta ? " (Aᵀ)" : "", s->tb ? " (Bᵀ)" : "",
           own[1], 100 * own[1] / pt, blas[1], own[1] / blas[1]);
    if (avx512) sort3(own2), printf(" %.0f |", own2[1]);
    printf("\n");
    free(A), free(B), free(C);
  }
  return 0;
}
