#include "sha256.h"

#include <string.h>

static const uint32_t K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,
    0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,
    0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,
    0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,
    0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,
    0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,
    0xc67178f2u,
};

static uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32u - n)); }

static void put_be32(uint8_t *p, uint32_t v)
{
    unsigned k;
    for (k = 0; k < 4; k++) {
        p[k] = (uint8_t)(v >> (24u - 8u * k));
    }
}

/* One 64-byte block into the state. The working variables a..h are v[0..7]; each round shifts
 * them one place down (h = g, ..., b = a), and the message schedule is kept as its last 16
 * words. */
static void compress(uint32_t state[8], const uint8_t *block)
{
    uint32_t w[16], v[8];
    unsigned i, j;
    memcpy(v, state, sizeof v);
    for (i = 0; i < 64; i++) {
        uint32_t *wi = &w[i & 15u], t1, t2;
        if (i < 16) {
            const uint8_t *p = block + 4u * i;
            *wi = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        } else {
            const uint32_t w15 = w[(i - 15u) & 15u], w2 = w[(i - 2u) & 15u];
            *wi += (rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3)) + w[(i - 7u) & 15u] +
                   (rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10));
        }
        t1 = v[7] + (rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25)) +
             ((v[4] & v[5]) ^ (~v[4] & v[6])) + K[i] + *wi;
        t2 = (rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22)) +
             ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        for (j = 7; j; j--) {
            v[j] = v[j - 1u];
        }
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (i = 0; i < 8; i++) {
        state[i] += v[i];
    }
}

void mk_sha256(const uint8_t *data, size_t n, uint8_t digest[32])
{
    static const uint32_t init[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                     0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
    const size_t bytes = n;
    uint32_t state[8];
    uint8_t block[64];
    size_t rest = n % 64u;
    unsigned i;
    memcpy(state, init, sizeof state);
    for (; n >= 64u; n -= 64u, data += 64) { /* the whole blocks, straight from the input */
        compress(state, data);
    }
    /* the padding: 0x80, zeros, the length in bits (big-endian u64) in the last 8 bytes */
    memset(block, 0, sizeof block);
    memcpy(block, data, rest);
    block[rest] = 0x80u;
    if (rest >= 56u) { /* no room for the length: one more block */
        compress(state, block);
        memset(block, 0, sizeof block);
    }
    put_be32(block + 56, (uint32_t)((uint64_t)bytes >> 29));
    put_be32(block + 60, (uint32_t)bytes << 3);
    compress(state, block);
    for (i = 0; i < 8; i++) {
        put_be32(digest + 4u * i, state[i]);
    }
}
