/* SHA-256 (FIPS 180-4) in one call: the package's model id and the image id of BEGIN/COMMIT.
 * Images are in flash whole, so no streaming interface is needed. */
#ifndef MK_SHA256_H
#define MK_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* The digest of `n` bytes. */
void mk_sha256(const uint8_t *data, size_t n, uint8_t digest[32]);

#endif
