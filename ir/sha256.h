/* sha256.h — SHA-256 (FIPS 180-4), incremental: for content hashes (cache keys, reproducible outputs),
 * where a collision-resistant digest is wanted rather than a fast one. Portable C, no intrinsics. */
#ifndef GRAFT_SHA256_H
#define GRAFT_SHA256_H
#include <stddef.h>
#include <stdint.h>

typedef struct gr_sha256 {
  uint32_t h[8];   /* chaining state */
  uint64_t len;    /* bytes hashed so far */
  uint8_t buf[64]; /* a partial block */
  size_t nbuf;
} gr_sha256;

void gr_sha256_init(gr_sha256 *s);
/* Any split of the input into update calls gives the same digest. */
void gr_sha256_update(gr_sha256 *s, const void *data, size_t n);
/* Writes the digest; s must be initialised again before reuse. */
void gr_sha256_final(gr_sha256 *s, uint8_t out[32]);
/* Lowercase hex, NUL-terminated. */
void gr_sha256_hex(const uint8_t digest[32], char out[65]);

#endif
