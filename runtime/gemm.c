/* gemm.c — graft's single-precision GEMM: C = op(A) op(B) + beta C, row-major, for every f32
 * matrix product of a generated step (dense layers and convolutions).
 *
 * It is our own on any x86-64 CPU with AVX2 and FMA: the classic blocked algorithm (Goto; BLIS's five
 * loops) over 12 x 32 tiles. With AVX-512 one micro-kernel computes a whole tile: 24 zmm
 * accumulators, two vector loads of packed B and twelve broadcasts of packed A per k, so the FMA
 * units, not the loads, set the pace. With AVX2 only (16 ymm registers) the tiles are 6 x 16 (12
 * accumulators, two loads of B and six broadcasts per k, the shape of OpenBLAS's and BLIS's Haswell
 * kernels), over the same packed panels: half a column panel stays in L1 while every row panel of A
 * passes over it. Both add each output's products in the same
 * order, so the two kernels give the same bits. Panels are packed with zeros past the edges; the
 * AVX-512 kernel computes whole tiles and stores edge tiles through a small buffer, the AVX2 one
 * computes an edge tile's rows only and stores it through lane masks. The work is
 * split across graft's thread pool (pool.c) by output columns, or by rows when A is the larger
 * operand (each thread then packs only its share of it), so every element of C is computed by one
 * thread in one order: results do not depend on the thread count. Elsewhere (no AVX2, or
 * GRAFT_GEMM=blas in the environment) it calls OpenBLAS, which stays the reference the tests compare
 * against; GRAFT_GEMM=avx2 picks the AVX2 kernels on an AVX-512 CPU.
 *
 * OpenBLAS 0.3.21 as configured on the AVX-512 machines uses AVX2 kernels, under half of their FMA
 * peak, and it packs a convolution's columns only from a stored matrix; that is why this file exists
 * (issue 5, docs/benchmarks.md). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <immintrin.h>
#include "ir/ir.h"
#include "runtime/runtime.h"

#define MR 12
#define NR GR_PANEL /* 32 */
#define KC 256  /* a packed B micro-panel (KC x NR floats, 32 KiB) stays in L1 */
#define MC 120  /* a packed A block (MC x KC, 120 KiB) stays in L2 */
#define NC 1536 /* a packed B block (KC x NC, 1.5 MiB) */
#define DOT_KC 2048 /* the dot-product kernel's depth block */

/* Which kernels serve f32 GEMMs: decided once from the CPU and GRAFT_GEMM (blas | avx2), or set by
 * gr_gemm_use (the tests and the GEMM benchmark). */
enum { USE_BLAS, USE_AVX2, USE_AVX512 };
static int use_kind = -1; /* USE_..., once decided */

static bool cpu_can(int use) {
  __builtin_cpu_init();
  if (use == USE_AVX512) return __builtin_cpu_supports("avx512f");
  if (use == USE_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return true;
}

static int gemm_use(void) {
  if (use_kind < 0) {
    const char *e = getenv("GRAFT_GEMM");
    int use = cpu_can(USE_AVX512) ? USE_AVX512 : cpu_can(USE_AVX2) ? USE_AVX2 : USE_BLAS;
    if (e && !strcmp(e, "blas")) use = USE_BLAS;
    else if (e && !strcmp(e, "avx2") && use == USE_AVX512) use = USE_AVX2;
    use_kind = use;
  }
  return use_kind;
}

static bool own_gemm(void) { return gemm_use() != USE_BLAS; }

static const char *const use_names[] = {"openblas", "graft avx2 6x16", "graft avx512 12x32"};

const char *gr_gemm_kind(void) { return use_names[gemm_use()]; }

bool gr_gemm_use(const char *kind) {
  static const char *const keys[] = {"blas", "avx2", "avx512"};
  for (int u = 0; u < 3; u++)
    if (!strcmp(kind, keys[u])) {
      if (!cpu_can(u)) return false;
      use_kind = u;
      return true;
    }
  return false;
}

/* One product, as gr_sgemm was called; or with pack, as gr_sgemm_cb was (B packed by the caller's
 * function, block by block). */
typedef struct gemm_job {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  const float *A, *B;
  gr_pack_fn pack;
  void *pack_ctx;
  float beta;
  float *C;
} gemm_job;

#define AVX512 __attribute__((target("avx512f,avx2,fma")))
#define AVX2 __attribute__((target("avx2,fma")))

/* dst[i * ldd + r] = src[r * lds + i] for r < rows (8 when rows is 8, else zero rows past it) and
 * i < 8, storing `width` (8 or 4) floats of each dst row: an 8 x 8 transpose in AVX registers. */
AVX2 static inline __attribute__((always_inline)) void transpose8(const float *src, int64_t lds, int rows, float *dst, int64_t ldd, int width) {
  __m256 r[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) r[i] = i < rows ? _mm256_loadu_ps(src + i * lds) : _mm256_setzero_ps();
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
  __m256 o[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                 _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                 _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                 _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {
    if (width == 8) _mm256_storeu_ps(dst + i * ldd, o[i]);
    else _mm_storeu_ps(dst + i * ldd, _mm256_castps256_ps128(o[i]));
  }
}

/* dst[k * w + r] = src[r * lds + k] for r < rows, zero for rows <= r < w, k < kc: `rows` rows of a
 * row-major matrix read along k into a k-major panel w wide (w a multiple of 4). */
AVX2 static void pack_rows(const float *src, int64_t lds, int64_t rows, int64_t kc, float *dst, int64_t w) {
  int64_t k8 = kc / 8 * 8;
  /* eight rows at a time along all of kc: eight streams for the hardware prefetcher, where a panel's
   * every row at once was up to 32 (a product's B read from memory crawled) */
  for (int64_t r = 0; r < w; r += 8) {
    int width = w - r >= 8 ? 8 : 4, n = rows - r < 0 ? 0 : (rows - r > 8 ? 8 : (int)(rows - r));
    const float *s = src + r * lds;
    if (n == 8 && width == 8) { /* whole blocks, the common case, with the rows' next lines prefetched */
      for (int64_t k = 0; k < k8; k += 8) {
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) _mm_prefetch((const char *)(s + i * lds + k + 32), _MM_HINT_T0);
        transpose8(s + k, lds, 8, dst + k * w + r, w, 8);
      }
    } else {
      for (int64_t k = 0; k < k8; k += 8) transpose8(s + k, lds, n, dst + k * w + r, w, width);
    }
  }
  for (int64_t k = k8; k < kc; k++)
    for (int64_t r = 0; r < w; r++) dst[k * w + r] = r < rows ? src[r * lds + k] : 0;
}

/* The lanes i < n of a vector of 8 (a mask for _mm256_maskload_ps, which reads nothing elsewhere). */
AVX2 static __m256i lanes_below(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 0 ? 0 : n > 8 ? 8 : n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Packs rows i0..i0+mc of op(A), depths k0..k0+kc, as MR-row micro-panels: ap[panel][k][MR]. */
AVX2 static void pack_a(const gemm_job *j, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float *ap) {
  for (int64_t ip = 0; ip < mc; ip += MR) {
    int64_t rows = mc - ip < MR ? mc - ip : MR;
    float *dst = ap + ip * kc;
    if (j->ta) { /* op(A)[i, k] = A[k, i]: MR consecutive floats per k, zeros past the edge */
      __m256i m0 = lanes_below(rows), m1 = lanes_below(rows - 8);
      for (int64_t k = 0; k < kc; k++) {
        const float *src = j->A + (k0 + k) * j->lda + i0 + ip;
        _mm256_storeu_ps(dst + k * MR, _mm256_maskload_ps(src, m0));
        _mm_storeu_ps(dst + k * MR + 8, _mm_maskload_ps(src + 8, _mm256_castsi256_si128(m1)));
      }
    } else {
      pack_rows(j->A + (i0 + ip) * j->lda + k0, j->lda, rows, kc, dst, MR);
    }
  }
}

/* Packs depths k0..k0+kc of op(B), columns n0..n0+nc, as NR-column micro-panels: bp[panel][k][NR]. */
AVX2 static void pack_b(const gemm_job *j, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float *bp) {
  for (int64_t jp = 0; jp < nc; jp += NR) {
    int64_t cols = nc - jp < NR ? nc - jp : NR;
    float *dst = bp + jp * kc;
    if (!j->tb) { /* NR consecutive floats per k, zeros past the edge */
      const float *src = j->B + k0 * j->ldb + n0 + jp;
      if (cols == NR) {
        for (int64_t k = 0; k < kc; k++, src += j->ldb)
#pragma GCC unroll 4
          for (int q = 0; q < 4; q++) _mm256_store_ps(dst + k * NR + 8 * q, _mm256_loadu_ps(src + 8 * q));
      } else {
        __m256i m[4];
        for (int q = 0; q < 4; q++) m[q] = lanes_below(cols - 8 * q);
        for (int64_t k = 0; k < kc; k++, src += j->ldb)
#pragma GCC unroll 4
          for (int q = 0; q < 4; q++) _mm256_store_ps(dst + k * NR + 8 * q, _mm256_maskload_ps(src + 8 * q, m[q]));
      }
    } else { /* op(B)[k, c] = B[c, k] */
      pack_rows(j->B + (n0 + jp) * j->ldb + k0, j->ldb, cols, kc, dst, NR);
    }
  }
}

/* c[MR x NR] (row stride ldc) = (load ? c : 0) * cb + a b over kc, a and b packed panels. */
AVX512 static void micro_12x32(int64_t kc, const float *a, const float *b, float *c,
                                                               int64_t ldc, float cb, bool load) {
  __m512 acc[MR][2];
#pragma GCC unroll 12
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      __m512 av = _mm512_set1_ps(a[r]);
      acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
    }
    a += MR;
    b += NR;
  }
  if (load) {
    __m512 vb = _mm512_set1_ps(cb);
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      float *cr = c + r * ldc;
      _mm512_storeu_ps(cr, _mm512_fmadd_ps(_mm512_loadu_ps(cr), vb, acc[r][0]));
      _mm512_storeu_ps(cr + 16, _mm512_fmadd_ps(_mm512_loadu_ps(cr + 16), vb, acc[r][1]));
    }
  } else {
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      _mm512_storeu_ps(c + r * ldc, acc[r][0]);
      _mm512_storeu_ps(c + r * ldc + 16, acc[r][1]);
    }
  }
}

/* The AVX2 micro-kernel's products: acc[R x 16] = a b over kc, where a is R <= 6 rows of a 12-row
 * packed A panel and b sixteen columns of a 32-column packed B panel (R a constant once inlined). */
AVX2 static inline __attribute__((always_inline)) void dot_rx16(int R, int64_t kc, const float *a, const float *b, __m256 acc[6][2]) {
#pragma GCC unroll 6
  for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; k++) {
    __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
      __m256 av = _mm256_broadcast_ss(a + r);
      acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
    }
    a += MR;
    b += NR;
  }
}

/* The AVX2 micro-kernel: c[6 x 16] (row stride ldc) = (load ? c : 0) * cb + a b over kc. */
AVX2 static void micro_6x16(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float cb, bool load) {
  __m256 acc[6][2];
#pragma GCC unroll 6
  for (int r = 0; r < 6; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0), _mm_prefetch((const char *)(c + r * ldc + 15), _MM_HINT_T0);
  dot_rx16(6, kc, a, b, acc);
  if (load) {
    __m256 vb = _mm256_set1_ps(cb);
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++) {
      float *cr = c + r * ldc;
      _mm256_storeu_ps(cr, _mm256_fmadd_ps(_mm256_loadu_ps(cr), vb, acc[r][0]));
      _mm256_storeu_ps(cr + 8, _mm256_fmadd_ps(_mm256_loadu_ps(cr + 8), vb, acc[r][1]));
    }
  } else {
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++) {
      _mm256_storeu_ps(c + r * ldc, acc[r][0]);
      _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
    }
  }
}

/* An AVX2 edge tile, rows x cols of C (rows <= 6, cols <= 16): the products of its rows only (M = 64
 * leaves 4 rows in every column of tiles), C read and written through lane masks instead of a
 * whole-tile buffer. R is a constant in each copy (edge_6x16's switch), so the accumulators stay in
 * registers: with a run-time row count the compiler kept them on the stack, and a 4-row tile cost
 * twice a whole one. */
AVX2 static inline __attribute__((always_inline)) void edge_rx16(int R, int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float cb, bool load, int64_t cols) {
  __m256 acc[6][2];
  dot_rx16(R, kc, a, b, acc);
  __m256i m0 = lanes_below(cols), m1 = lanes_below(cols - 8);
  __m256 vb = _mm256_set1_ps(cb);
#pragma GCC unroll 6
  for (int r = 0; r < R; r++) {
    float *cr = c + r * ldc;
    __m256 v0 = acc[r][0], v1 = acc[r][1];
    if (load) v0 = _mm256_fmadd_ps(_mm256_maskload_ps(cr, m0), vb, v0), v1 = _mm256_fmadd_ps(_mm256_maskload_ps(cr + 8, m1), vb, v1);
    _mm256_maskstore_ps(cr, m0, v0);
    _mm256_maskstore_ps(cr + 8, m1, v1);
  }
}
AVX2 static void edge_6x16(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float cb, bool load, int64_t rows, int64_t cols) {
  switch (rows) {
  case 1: edge_rx16(1, kc, a, b, c, ldc, cb, load, cols); break;
  case 2: edge_rx16(2, kc, a, b, c, ldc, cb, load, cols); break;
  case 3: edge_rx16(3, kc, a, b, c, ldc, cb, load, cols); break;
  case 4: edge_rx16(4, kc, a, b, c, ldc, cb, load, cols); break;
  case 5: edge_rx16(5, kc, a, b, c, ldc, cb, load, cols); break;
  default: edge_rx16(6, kc, a, b, c, ldc, cb, load, cols); break;
  }
}

typedef void micro_fn(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float cb, bool load);

/* The micro-kernel in use and its tile: 12 x 32 (a whole packed panel of each) with AVX-512, 6 x 16
 * with AVX2. */
typedef struct tile_kernel {
  micro_fn *micro;
  void (*edge)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float cb, bool load, int64_t rows, int64_t cols);
  int tm, tn;
} tile_kernel;

static tile_kernel tiles(void) {
  return gemm_use() == USE_AVX512 ? (tile_kernel){micro_12x32, NULL, MR, NR} : (tile_kernel){micro_6x16, edge_6x16, 6, 16};
}

/* C[m0..m1, n0..n1] of the job, blocked (jc, pc, ic, jr, ir), with this thread's packing buffers. */
static void gemm_block(const gemm_job *j, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float *ap, float *bp) {
  tile_kernel tk = tiles();
  for (int64_t jc = n0; jc < n1; jc += NC) {
    int64_t nc = n1 - jc < NC ? n1 - jc : NC;
    for (int64_t pc = 0; pc < j->K || pc == 0; pc += KC) {
      int64_t kc = j->K - pc < KC ? j->K - pc : KC;
      /* the first depth block applies beta (0: C is not read, as BLAS); later ones add */
      bool load = pc > 0 || j->beta != 0;
      float cb = pc > 0 ? 1.0f : j->beta;
      if (j->pack) j->pack(j->pack_ctx, pc, kc, jc, nc, bp);
      else pack_b(j, pc, kc, jc, nc, bp);
      for (int64_t ic = m0; ic < m1; ic += MC) {
        int64_t mc = m1 - ic < MC ? m1 - ic : MC;
        pack_a(j, ic, mc, pc, kc, ap);
        /* tn columns of a B panel (all of it with AVX-512, a half with AVX2) stay in L1 while the
         * tiles of every row panel of A pass over them */
        for (int64_t jr = 0; jr < nc; jr += tk.tn) {
          const float *b = bp + jr / NR * NR * kc + jr % NR;
          for (int64_t ir = 0; ir < mc; ir += tk.tm) {
            const float *a = ap + ir / MR * MR * kc + ir % MR;
            float *c = j->C + (ic + ir) * j->ldc + jc + jr;
            int64_t rows = mc - ir < tk.tm ? mc - ir : tk.tm, cols = nc - jr < tk.tn ? nc - jr : tk.tn;
            if (rows == tk.tm && cols == tk.tn) {
              tk.micro(kc, a, b, c, j->ldc, cb, load);
            } else if (tk.edge) {
              tk.edge(kc, a, b, c, j->ldc, cb, load, rows, cols);
            } else { /* an edge tile: through a whole-tile buffer */
              float t[MR * NR] __attribute__((aligned(64)));
              for (int64_t r = 0; r < rows; r++)
                for (int64_t q = 0; q < cols; q++) t[r * tk.tn + q] = load ? c[r * j->ldc + q] : 0;
              tk.micro(kc, a, b, t, tk.tn, cb, load);
              for (int64_t r = 0; r < rows; r++)
                for (int64_t q = 0; q < cols; q++) c[r * j->ldc + q] = t[r * tk.tn + q];
            }
          }
        }
      }
      if (j->K == 0) break;
    }
  }
}

/* The sum of a 16-lane accumulator held as its lanes 0-7 and 8-15, in the order GCC's
 * _mm512_reduce_add_ps adds them (halves, then quarters, then pairs), written out so that the AVX2
 * and AVX-512 dot-product kernels give the same bits whatever the compiler. */
AVX2 static inline float sum16(__m256 lo, __m256 hi) {
  __m256 t = _mm256_add_ps(hi, lo);
  __m128 u = _mm_add_ps(_mm256_extractf128_ps(t, 1), _mm256_castps256_ps128(t));
  u = _mm_add_ps(u, _mm_shuffle_ps(u, u, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtss_f32(u) + _mm_cvtss_f32(_mm_shuffle_ps(u, u, 1));
}

/* c (an output of dot_rows) from the dot product v of its rows over depths k0.. of one block. */
static inline void dot_store(const gemm_job *j, float *c, int64_t k0, float v) {
  if (k0 > 0) *c += v;
  else *c = j->beta != 0 ? v + j->beta * *c : v;
}

/* C = A B^T + beta C for few outputs and a long K (a convolution's weight gradient over a batch of
 * small images: 32 x 9 outputs, K = 43264): every output is a dot product of two contiguous rows,
 * which the packed kernel would spend its time packing for. Each output accumulates 16 lanes over
 * k (lane l takes k = l mod 16), summed at the end of each DOT_KC block; the AVX-512 kernel does 4 x 4
 * outputs at a time in 16 zmm accumulators, the AVX2 one 2 x 2 in 8 pairs of ymm. One part computes
 * rows [i0, i1) of C. */
AVX512 static void dot_rows(const gemm_job *j, int64_t i0, int64_t i1) {
  /* K in chunks that keep the rows' slices in L2 while every block of outputs passes over them */
  for (int64_t k0 = 0; k0 < j->K; k0 += DOT_KC) {
    int64_t K = j->K - k0 < DOT_KC ? j->K - k0 : DOT_KC, kv = K & ~(int64_t)15;
    __mmask16 tail = (__mmask16)((1u << (K & 15)) - 1);
    for (int64_t i = i0; i < i1; i += 4)
      for (int64_t q = 0; q < j->N; q += 4) {
        int mi = i1 - i < 4 ? (int)(i1 - i) : 4, nq = j->N - q < 4 ? (int)(j->N - q) : 4;
        const float *a[4], *b[4];
        for (int r = 0; r < 4; r++) a[r] = j->A + (i + (r < mi ? r : 0)) * j->lda + k0;
        for (int r = 0; r < 4; r++) b[r] = j->B + (q + (r < nq ? r : 0)) * j->ldb + k0;
        __m512 acc[4][4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
          for (int s = 0; s < 4; s++) acc[r][s] = _mm512_setzero_ps();
        for (int64_t k = 0; k <= kv; k += 16) {
          __mmask16 m = k < kv ? (__mmask16)0xffff : tail;
          if (!m) break;
          __m512 av[4], bv[4];
#pragma GCC unroll 4
          for (int r = 0; r < 4; r++) av[r] = _mm512_maskz_loadu_ps(m, a[r] + k);
#pragma GCC unroll 4
          for (int s = 0; s < 4; s++) bv[s] = _mm512_maskz_loadu_ps(m, b[s] + k);
#pragma GCC unroll 4
          for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
            for (int s = 0; s < 4; s++) acc[r][s] = _mm512_fmadd_ps(av[r], bv[s], acc[r][s]);
        }
        for (int r = 0; r < mi; r++)
          for (int s = 0; s < nq; s++) {
            __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r][s]), 1));
            dot_store(j, j->C + (i + r) * j->ldc + q + s, k0, sum16(_mm512_castps512_ps256(acc[r][s]), hi));
          }
      }
  }
}

/* 8 floats at p: all of them, or (the tail of a row) the lanes in m, zeros elsewhere. */
AVX2 static inline __m256 load8(const float *p, __m256i m, bool whole) { return whole ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m); }

AVX2 static void dot_rows_avx2(const gemm_job *j, int64_t i0, int64_t i1) {
  for (int64_t k0 = 0; k0 < j->K; k0 += DOT_KC) {
    int64_t K = j->K - k0 < DOT_KC ? j->K - k0 : DOT_KC, kv = K & ~(int64_t)15;
    __m256i tail_lo = lanes_below(K & 15), tail_hi = lanes_below((K & 15) - 8);
    for (int64_t i = i0; i < i1; i += 2)
      for (int64_t q = 0; q < j->N; q += 2) {
        int mi = i1 - i < 2 ? (int)(i1 - i) : 2, nq = j->N - q < 2 ? (int)(j->N - q) : 2;
        const float *a[2], *b[2];
        for (int r = 0; r < 2; r++) a[r] = j->A + (i + (r < mi ? r : 0)) * j->lda + k0;
        for (int r = 0; r < 2; r++) b[r] = j->B + (q + (r < nq ? r : 0)) * j->ldb + k0;
        __m256 lo[2][2], hi[2][2];
        for (int r = 0; r < 2; r++)
          for (int s = 0; s < 2; s++) lo[r][s] = hi[r][s] = _mm256_setzero_ps();
        for (int64_t k = 0; k < K; k += 16) { /* past kv, the tail: zeros past K, as the AVX-512 kernel's masked loads */
          bool whole = k < kv;
          __m256 al[2], ah[2], bl[2], bh[2];
          for (int r = 0; r < 2; r++) al[r] = load8(a[r] + k, tail_lo, whole), ah[r] = load8(a[r] + k + 8, tail_hi, whole);
          for (int s = 0; s < 2; s++) bl[s] = load8(b[s] + k, tail_lo, whole), bh[s] = load8(b[s] + k + 8, tail_hi, whole);
          for (int r = 0; r < 2; r++)
            for (int s = 0; s < 2; s++) {
              lo[r][s] = _mm256_fmadd_ps(al[r], bl[s], lo[r][s]);
              hi[r][s] = _mm256_fmadd_ps(ah[r], bh[s], hi[r][s]);
            }
        }
        for (int r = 0; r < mi; r++)
          for (int s = 0; s < nq; s++) dot_store(j, j->C + (i + r) * j->ldc + q + s, k0, sum16(lo[r][s], hi[r][s]));
      }
  }
}

/* Part p of parts of [0, len) cut at multiples of unit: [*lo, *hi), empty when *lo >= *hi. */
static void part_range(int64_t len, int64_t unit, int64_t p, int64_t parts, int64_t *lo, int64_t *hi) {
  int64_t units = (len + unit - 1) / unit;
  *lo = units * p / parts * unit;
  *hi = units * (p + 1) / parts * unit;
  if (*hi > len) *hi = len;
}

static void dot_part(void *arg, int64_t p, int64_t parts) {
  const gemm_job *j = arg;
  int64_t lo, hi;
  part_range(j->M, 4, p, parts, &lo, &hi);
  if (lo < hi) (gemm_use() == USE_AVX512 ? dot_rows : dot_rows_avx2)(j, lo, hi);
}

/* The parts of a job: contiguous ranges of NR-column panels (or MR-row panels when N is narrow). */
typedef struct gemm_split {
  const gemm_job *j;
  bool by_rows;
  int64_t unit; /* rows or columns: a tile's */
} gemm_split;

static void gemm_part(void *arg, int64_t p, int64_t parts) {
  const gemm_split *s = arg;
  const gemm_job *j = s->j;
  int64_t lo, hi;
  part_range(s->by_rows ? j->M : j->N, s->unit, p, parts, &lo, &hi);
  if (lo >= hi) return;
  /* packing buffers: per thread, kept between calls (sized for the largest blocks) */
  static _Thread_local float *ap, *bp;
  if (!ap) {
    ap = aligned_alloc(64, (size_t)(MC + MR) * KC * sizeof(float));
    bp = aligned_alloc(64, (size_t)(NC + NR) * KC * sizeof(float));
    if (!ap || !bp) abort(); /* a few MiB, once per thread */
  }
  if (s->by_rows) gemm_block(j, lo, hi, 0, j->N, ap, bp);
  else gemm_block(j, 0, j->M, lo, hi, ap, bp);
}

/* The threads a job goes to: one for a small product, which is not worth waking the pool for (a
 * wake-up costs microseconds). */
static int64_t pool_parts(const gemm_job *j) { return j->M * j->N * (j->K > 0 ? j->K : 1) < (int64_t)1 << 20 ? 1 : gr_threads(); }

/* Runs a job on the pool. Split by columns, every thread packs all of op(A) and its share of op(B);
 * by rows, all of op(B) and its share of op(A). So rows when A is the larger (M > N: a deep layer's
 * small images) and its row panels go round, or when there are too few column panels to go round;
 * columns otherwise. The shares are cut at tiles (at panels of a B that a pack function packs), not
 * at whole panels: 147 columns (conv1's weight gradient) go 80 + 67, not 96 + 51. Where a share
 * starts does not change any output's sum. */
static void gemm_run(const gemm_job *j) {
  int64_t parts = pool_parts(j);
  int64_t row_panels = (j->M + MR - 1) / MR, col_panels = (j->N + NR - 1) / NR;
  gemm_split s = {.j = j, .by_rows = (j->M > j->N && row_panels >= parts) || (col_panels < 2 * parts && row_panels > col_panels)};
  tile_kernel tk = tiles();
  s.unit = s.by_rows ? tk.tm : j->pack ? NR : tk.tn;
  int64_t units = ((s.by_rows ? j->M : j->N) + s.unit - 1) / s.unit;
  if (parts > units) parts = units;
  gr_parallel(gemm_part, &s, parts);
}

void gr_sgemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (!own_gemm()) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb,
                beta, C, ldc);
    return;
  }
  gemm_job j = {.ta = ta, .tb = tb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = ldc, .A = A, .B = B, .beta = beta, .C = C};
  if (!ta && tb && (int64_t)M * N <= 1024 && K >= 1024) {
    int64_t parts = pool_parts(&j), blocks = (M + 3) / 4;
    gr_parallel(dot_part, &j, parts < blocks ? parts : blocks);
    return;
  }
  gemm_run(&j);
}

/* A growable buffer kept between calls (one per thread that asks). */
static void *grow(void **buf, size_t *have, size_t bytes) {
  bytes = (bytes + 63) / 64 * 64;
  if (bytes > *have) {
    free(*buf);
    if (!(*buf = aligned_alloc(64, bytes))) abort();
    *have = bytes;
  }
  return *buf;
}

/* B unpacked from a pack function into a row-major K x N matrix (leading dimension N), for OpenBLAS:
 * blocks of kb rows and nb columns (nb a multiple of 32), column blocks in parallel on the pool, each
 * packed into the thread's buffer and copied out row by row. */
typedef struct unpack_job {
  gr_pack_fn pack;
  void *ctx;
  int64_t K, N, kb, nb;
  size_t elem;
  char *B;
} unpack_job;

static void unpack_part(void *arg, int64_t p, int64_t parts) {
  const unpack_job *u = arg;
  static _Thread_local void *buf;
  static _Thread_local size_t have;
  int64_t lo, hi, kb = u->kb < u->K ? u->kb : (u->K > 0 ? u->K : 1);
  part_range(u->N, u->nb, p, parts, &lo, &hi);
  char *bp = grow(&buf, &have, (size_t)(kb * u->nb) * u->elem);
  for (int64_t n0 = lo; n0 < hi; n0 += u->nb) {
    int64_t nc = hi - n0 < u->nb ? hi - n0 : u->nb;
    for (int64_t k0 = 0; k0 < u->K; k0 += kb) {
      int64_t kc = u->K - k0 < kb ? u->K - k0 : kb;
      u->pack(u->ctx, k0, kc, n0, nc, bp);
      for (int64_t q = 0; q < nc; q += GR_PANEL) /* panel q: kc rows of 32 at bp + q kc */
        for (int64_t k = 0; k < kc; k++)
          memcpy(u->B + ((k0 + k) * u->N + n0 + q) * u->elem, bp + (q * kc + k * GR_PANEL) * u->elem,
                 (size_t)(nc - q < GR_PANEL ? nc - q : GR_PANEL) * u->elem);
    }
  }
}

static void *unpack_b(gr_pack_fn pack, void *ctx, int64_t K, int64_t N, size_t elem, int64_t kb, int64_t nb) {
  static _Thread_local void *buf;
  static _Thread_local size_t have;
  unpack_job u = {.pack = pack, .ctx = ctx, .K = K, .N = N, .kb = kb, .nb = nb, .elem = elem};
  u.B = grow(&buf, &have, (size_t)((K > 0 ? K : 1) * N) * elem);
  int64_t blocks = (N + nb - 1) / nb, threads = gr_threads();
  gr_parallel(unpack_part, &u, K * N < (int64_t)1 << 16 ? 1 : threads < blocks ? threads : blocks);
  return u.B;
}

/* Without our kernel, B is unpacked into an ordinary matrix (on the pool) for one OpenBLAS product:
 * the same product, and the same bits, as gr_sgemm on stored columns. */
void gr_sgemm_cb(int ta, int M, int N, int K, const float *A, int lda, gr_pack_fn pack, void *ctx, float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (!own_gemm()) {
    const float *B = unpack_b(pack, ctx, K, N, sizeof(float), K, 8 * GR_PANEL);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, N, beta, C, ldc);
    return;
  }
  gemm_job j = {.ta = ta, .M = M, .N = N, .K = K, .lda = lda, .ldc = ldc, .A = A, .pack = pack, .pack_ctx = ctx, .beta = beta, .C = C};
  gemm_run(&j);
}

/* f64 (the gradient checks) asks for blocks of 16 rows and 64 columns, so that the pack functions'
 * depth offsets and later panels, which graft's own f32 GEMM asks for, are checked in f64 too. */
void gr_dgemm_cb(int ta, int M, int N, int K, const double *A, int lda, gr_pack_fn pack, void *ctx, double beta, double *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  const double *B = unpack_b(pack, ctx, K, N, sizeof(double), 16, 2 * GR_PANEL);
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, CblasNoTrans, M, N, K, 1.0, A, lda, B, N, beta, C, ldc);
}
