/* rng.c — xoshiro256** (Blackman & Vigna) seeded with splitmix64. All of graft's randomness
 * (initialisation, shuffling) flows from the plan's seed through this, so runs are reproducible. */
#include "runtime/runtime.h"
#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void gr_rng_seed(gr_rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t gr_rng_next(gr_rng *r) {
  uint64_t *s = r->s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double gr_rng_uniform(gr_rng *r) { return (double)(gr_rng_next(r) >> 11) * 0x1.0p-53; }

/* Box-Muller on two uniforms (1 - u keeps the logarithm finite). */
double gr_rng_normal(gr_rng *r) {
  double u = 1.0 - gr_rng_uniform(r), v = gr_rng_uniform(r);
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

uint64_t gr_rng_below(gr_rng *r, uint64_t bound) {
  uint64_t limit = -bound % bound; /* 2^64 mod bound: reject the short final stripe */
  for (;;) {
    uint64_t x = gr_rng_next(r);
    if (x >= limit) return x % bound;
  }
}

void gr_rng_shuffle(gr_rng *r, int64_t *a, int64_t n) {
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)gr_rng_below(r, (uint64_t)i + 1);
    int64_t t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}
