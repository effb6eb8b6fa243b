/* Frames on the wire (docs/PROTOCOL.md, "Frames"): type u8, seq u16, length u16, payload,
 * crc32 u32, little-endian, COBS-encoded and ended by one 00 byte.
 *
 * mk_rx takes received bytes one at a time and yields each intact frame; a chunk between
 * delimiters that is not valid COBS, is shorter than 9 bytes, has a wrong length or CRC, or
 * is longer than the largest frame it accepts is dropped and counted, as the simulator's
 * export.contract.protocol.FrameDecoder does. Frames are decoded in place in the receive
 * buffer.
 */
#ifndef MK_FRAME_H
#define MK_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config.h"

typedef struct {
    uint8_t type;
    uint16_t seq;
    uint16_t length;
    const uint8_t *payload;
} mk_frame;

typedef struct {
    uint8_t *buf;
    uint32_t cap;       /* longest COBS chunk accepted: MK_COBS_MAX(max_payload + 9) */
    uint32_t len;
    int overflow;       /* the chunk grew past cap: drop it at its delimiter */
    uint32_t frames;    /* frames decoded since power-on */
    uint32_t errors;    /* chunks dropped since power-on */
} mk_rx;

/* `buf` holds MK_COBS_MAX(max_payload + MK_FRAME_OVERHEAD) bytes. */
void mk_rx_init(mk_rx *rx, uint8_t *buf, uint32_t max_payload);
/* Forget a partial frame (the counters are kept). */
void mk_rx_reset(mk_rx *rx);
/* Bytes were lost before the next one: drop the chunk at its delimiter, counted as an error. */
void mk_rx_overrun(mk_rx *rx);
/* One received byte; 1 when it completes an intact frame (in *frame, valid until the next
 * call), else 0. */
int mk_rx_byte(mk_rx *rx, uint8_t byte, mk_frame *frame);

/* Bytes a raw frame of `n` bytes must be shifted by in its buffer to be COBS-encoded in place. */
#define MK_COBS_SHIFT(n) (MK_COBS_MAX(n) - (n))

/* COBS-encode `n` bytes at `in` into `buf` and append the 00 delimiter; returns the encoded
 * length (delimiter included): the encoding of export.contract.cobs.cobs_encode. `buf` holds
 * MK_COBS_MAX(n) + 1 bytes; `in` may lie inside it, at least MK_COBS_SHIFT(n) bytes on, so
 * that a frame is encoded in place. */
size_t mk_cobs_encode(uint8_t *buf, const uint8_t *in, size_t n);

/* Decode COBS in place (no 00 byte in `data`); the decoded length, or -1 if not valid COBS. */
long mk_cobs_decode(uint8_t *data, size_t n);

/* Little-endian loads and stores. On a little-endian target they are copies, which the
 * compiler makes one load or store where the core allows unaligned ones (Cortex-M3/M4: LDR,
 * STR, LDRH, STRH); elsewhere bytes. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
static inline uint16_t mk_le16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t mk_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void mk_put16(uint8_t *p, uint32_t v)
{
    const uint16_t h = (uint16_t)v;
    memcpy(p, &h, 2);
}
static inline void mk_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
#else
static inline uint16_t mk_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t mk_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void mk_put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void mk_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
#endif

#endif
