/* CRC-32/ISO-HDLC, as zlib.crc32: reflected polynomial 0xEDB88320, initial and final XOR
 * 0xFFFFFFFF; cbf43926 for "123456789". Table-driven, a nibble at a time. */
#ifndef MK_CRC32_H
#define MK_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* CRC of `n` bytes continuing from `crc` (0 to start), as zlib.crc32(data, crc). */
uint32_t mk_crc32(uint32_t crc, const uint8_t *data, size_t n);

#endif
