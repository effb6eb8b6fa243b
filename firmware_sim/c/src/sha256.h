/* SHA-256 (FIPS 180-4), streaming: the package's model id and the image id of BEGIN/COMMIT. */
#ifndef MK_SHA256_H
#define MK_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state[8];
    uint64_t length;      /* bytes hashed so far */
    uint8_t block[64];
    uint32_t used;        /* bytes waiting in block */
} mk_sha256_ctx;

void mk_sha256_init(mk_sha256_ctx *h);
void mk_sha256_update(mk_sha256_ctx *h, const uint8_t *data, size_t n);
void mk_sha256_final(mk_sha256_ctx *h, uint8_t digest[32]);
/* The digest of `n` bytes in one call. */
void mk_sha256(const uint8_t *data, size_t n, uint8_t digest[32]);

#endif
