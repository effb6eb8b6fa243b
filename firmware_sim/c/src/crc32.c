#include "crc32.h"

/* The CRC of each 4-bit value (the reflected polynomial applied four times): two lookups a
 * byte, a 64-byte table instead of the 1 KB byte-wide one. */
static const uint32_t table[16] = {
    0x00000000u, 0x1db71064u, 0x3b6e20c8u, 0x26d930acu,
    0x76dc4190u, 0x6b6b51f4u, 0x4db26158u, 0x5005713cu,
    0xedb88320u, 0xf00f9344u, 0xd6d6a3e8u, 0xcb61b38cu,
    0x9b64c2b0u, 0x86d3d2d4u, 0xa00ae278u, 0xbdbdf21cu
};

uint32_t mk_crc32(uint32_t crc, const uint8_t *data, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *data++;
        crc = table[crc & 0xFu] ^ (crc >> 4);
        crc = table[crc & 0xFu] ^ (crc >> 4);
    }
    return ~crc;
}
